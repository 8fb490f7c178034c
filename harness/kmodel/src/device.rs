//! The backing block device as the kernel sees it (protocol doc §7.10): the server's
//! FUSE_NOTIFY_IOMAP_DEV_INVAL notifications, checked the way fuse_notify() checks them,
//! and the device page cache they keep coherent.
//!
//! The server reads and writes metadata through a buffered fd on the device, so the
//! device's page cache may hold pages of metadata blocks; the kernel writes file data with
//! bios that bypass that cache. When the server frees a block it must drop the block's page
//! (DEV_INVAL) before the block can become file data, or a stale, possibly dirty page
//! stays cached over the new data and its writeback overwrites it.
//!
//! The model cannot see the server's own buffered I/O, so it takes the cached pages from
//! the server's reports: every DEV_INVAL names blocks that were freed some time before it
//! was sent, and until it arrives a stale page of each may be cached. The hazard is file
//! data the kernel wrote into such a block: a block it was handed by a reply that came
//! *before* the invalidation. Only the file's own operations free its blocks, and the model
//! forgets a file's blocks when such an operation starts, so an invalidation that arrives
//! for a block still holding file data reports a free from before the block was handed out.

use std::collections::HashMap;

use fuse_wire::iomap::{
    FUSE_NOTIFY_IOMAP_DEV_INVAL, FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS,
    FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS,
};
use fuse_wire::structs::IomapDevInvalOut;

use crate::error::{Error, Result};
use crate::kernel::NodeId;
use crate::session::Notification;
use crate::wire::exact;

/// Who wrote file data into a device block, and through which mapping.
#[derive(Debug, Clone)]
struct Owner {
    node: NodeId,
    /// File offset of the block.
    offset: u64,
    /// Message number of the BEGIN reply that handed the block out.
    seq: u64,
    /// That request and mapping, for the report.
    mapping: String,
}

/// The device: its registration, the notifications about it, and which of its blocks hold
/// file data the kernel wrote.
#[derive(Debug)]
pub struct Device {
    /// The backing id the server's mappings must use.
    pub dev: u32,
    /// Size in bytes.
    pub size: u64,
    /// The filesystem block size (the granularity of frees and data bios).
    pub block_size: u64,
    /// Notifications seen, by code.
    pub counts: HashMap<i32, u64>,
    /// Every DEV_INVAL range `(offset, length)` in bytes, in arrival order.
    pub invalidated: Vec<(u64, u64)>,
    /// Every file data write the kernel made, `(device offset, length)` in bytes.
    pub written: Vec<(u64, u64)>,
    /// Device block → the file data the kernel wrote there.
    owners: HashMap<u64, Owner>,
    /// Device block → the message number of the latest DEV_INVAL covering it.
    last_inval: HashMap<u64, u64>,
    /// Failures found on the reader thread of a shared connection, for the next caller.
    failures: Vec<Error>,
}

impl Device {
    pub fn new(dev: u32, size: u64, block_size: u64) -> Device {
        Device {
            dev,
            size,
            block_size,
            counts: HashMap::new(),
            invalidated: Vec::new(),
            written: Vec::new(),
            owners: HashMap::new(),
            last_inval: HashMap::new(),
            failures: Vec::new(),
        }
    }

    /// Checks a notification the way fuse_notify() would (a rejected one is a server bug)
    /// and applies it. `context` says when it arrived, for the report.
    pub fn notification(&mut self, n: &Notification, context: &str) -> Result<()> {
        *self.counts.entry(n.code).or_default() += 1;
        let bad = |rule: String| Error::Violation {
            rule,
            request: context.to_string(),
            reply: format!("{} payload bytes (message {})", n.payload.len(), n.seq),
        };
        match n.code {
            FUSE_NOTIFY_IOMAP_DEV_INVAL => {
                let Some(inval) = exact::<IomapDevInvalOut>(&n.payload) else {
                    return Err(bad(
                        "§1.2: DEV_INVAL payload must be exactly 24 bytes".into()
                    ));
                };
                if inval.reserved != 0 {
                    return Err(bad(
                        "§3.9: DEV_INVAL reserved must be 0 (kernel: EINVAL)".into()
                    ));
                }
                if inval.dev != self.dev {
                    return Err(bad(format!(
                        "§7.10: DEV_INVAL for device {} but only {} is registered (kernel: EINVAL/ENODEV)",
                        inval.dev, self.dev
                    )));
                }
                let (offset, length) = (inval.range.offset, inval.range.length);
                if offset.checked_add(length).is_none() || offset >= self.size {
                    return Err(bad(format!(
                        "§7.10: DEV_INVAL range [{offset}, +{length}) overflows or starts past the device end {} (kernel: EINVAL)",
                        self.size
                    )));
                }
                self.invalidated.push((offset, length));
                self.dropped(offset, length.min(self.size - offset), n.seq, context)
            }
            FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS | FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS => {
                Err(Error::Unsupported(format!(
                    "mapping-cache notification {} (the model has no mapping cache)",
                    n.code
                )))
            }
            _ => Ok(()),
        }
    }

    /// The reader thread of a shared connection: failures wait for the next caller.
    pub fn notification_on_reader(&mut self, n: &Notification) {
        let context = format!(
            "(notification {} as message {} on the shared connection)",
            n.code, n.seq
        );
        if let Err(e) = self.notification(n, &context) {
            self.failures.push(e);
        }
    }

    /// The first failure the reader thread found, if any.
    pub fn take_failure(&mut self) -> Option<Error> {
        (!self.failures.is_empty()).then(|| self.failures.remove(0))
    }

    /// The device page cache drops `[offset, offset + length)` at message `seq`.
    fn dropped(&mut self, offset: u64, length: u64, seq: u64, context: &str) -> Result<()> {
        let bs = self.block_size;
        let (first, end) = (offset / bs, (offset + length).div_ceil(bs));
        let mut hazard = None;
        for b in first..end {
            self.last_inval.insert(b, seq);
            if let Some(owner) = self.owners.get(&b) {
                if owner.seq < seq && hazard.is_none() {
                    hazard = Some(self.hazard(b, owner, seq, context));
                }
            }
        }
        hazard.map_or(Ok(()), Err)
    }

    /// The kernel wrote file data of `node` at file offset `offset` to device bytes
    /// `[addr, addr + len)` through a mapping that reply `seq` handed out.
    pub fn data_written(
        &mut self,
        node: NodeId,
        offset: u64,
        addr: u64,
        len: u64,
        seq: u64,
        mapping: &str,
    ) -> Result<()> {
        self.written.push((addr, len));
        let bs = self.block_size;
        let (first, end) = (addr / bs, (addr + len).div_ceil(bs));
        for b in first..end {
            let owner = Owner {
                node,
                offset: offset + (b * bs).saturating_sub(addr),
                seq,
                mapping: mapping.to_string(),
            };
            // The invalidation may have been processed before this write was recorded.
            if let Some(&inval) = self.last_inval.get(&b) {
                if inval > seq {
                    return Err(self.hazard(b, &owner, inval, "(an earlier notification)"));
                }
            }
            self.owners.insert(b, owner);
        }
        Ok(())
    }

    /// `node` starts an operation that may free its blocks (truncate, fallocate, unlink,
    /// a short IOMAP_END): invalidations for them are expected from now on.
    pub fn forget_node(&mut self, node: NodeId) {
        self.owners.retain(|_, o| o.node != node);
    }

    /// Device blocks currently holding file data the kernel wrote.
    pub fn data_blocks(&self) -> usize {
        self.owners.len()
    }

    fn hazard(&self, block: u64, owner: &Owner, inval_seq: u64, context: &str) -> Error {
        let bs = self.block_size;
        Error::Violation {
            rule: format!(
                "§7.10: FUSE_NOTIFY_IOMAP_DEV_INVAL for device block {block} (bytes [{}, +{bs})) arrived as message {inval_seq}, after the reply (message {}) that handed the block out as file data of node {} at offset {}: the block was freed before it was handed out and its invalidation came late, so until then the device page cache could hold a stale page of it (a freed metadata block) whose writeback overwrites the file data the kernel wrote there; the server must invalidate a freed block before any other request can be given it",
                block * bs,
                owner.seq,
                owner.node,
                owner.offset
            ),
            request: format!("{} {context}", owner.mapping),
            reply: format!("DEV_INVAL as message {inval_seq}"),
        }
    }
}
