//! The kernel's rules for iomap replies (`fuse_wire::validate`), applied to every
//! IOMAP_CONFIG, IOMAP_BEGIN and IOMAP_IOEND reply of a replay, with what the session has
//! told the kernel so far (block size, maxbytes, backing devices).

use fuse_wire::iomap::{FUSE_IOMAP_CONFIG_BLOCKSIZE, FUSE_IOMAP_CONFIG_MAXBYTES, MAX_LFS_FILESIZE};
use fuse_wire::request::Op;
use fuse_wire::structs::{IomapBeginOut, IomapConfigOut, IomapIoendOut};
use fuse_wire::validate::{validate_begin_reply_with, validate_config_reply, ValidateCtx};
use fuse_wire::zerocopy::FromBytes;

/// What the kernel knows about the filesystem, as the session goes on.
#[derive(Debug, Clone)]
pub struct KernelView {
    pub blocksize: u32,
    pub maxbytes: i64,
    /// Backing ids the server registered.
    pub devices: Vec<u32>,
}

impl KernelView {
    pub fn new(fs_block_size: u32) -> KernelView {
        KernelView {
            blocksize: fs_block_size,
            maxbytes: MAX_LFS_FILESIZE,
            devices: Vec::new(),
        }
    }

    /// Checks one reply as the kernel would; `Err` says which rule it breaks. Replies
    /// other than successful iomap ones pass.
    pub fn check(&mut self, op: &Op<'_>, reply: &[u8]) -> Result<(), String> {
        let Ok(view) = fuse_wire::parse_reply(reply) else {
            // Framing is compared separately; nothing to check here.
            return Ok(());
        };
        if view.header.error != 0 {
            return Ok(());
        }
        let payload = view.payload;
        match op {
            Op::IomapConfig(_) => {
                let out = IomapConfigOut::from_reply(payload).ok_or_else(|| {
                    format!(
                        "§3.8: an IOMAP_CONFIG reply of {} bytes is longer than the struct",
                        payload.len()
                    )
                })?;
                validate_config_reply(&out, true).map_err(|e| format!("§7.10: {e}"))?;
                if out.flags & FUSE_IOMAP_CONFIG_BLOCKSIZE != 0 {
                    self.blocksize = out.s_blocksize;
                }
                if out.flags & FUSE_IOMAP_CONFIG_MAXBYTES != 0 {
                    self.maxbytes = out.s_maxbytes;
                }
                Ok(())
            }
            Op::IomapBegin(arg) => {
                let out = IomapBeginOut::read_from_bytes(payload).map_err(|_| {
                    format!(
                        "§1.1: an IOMAP_BEGIN reply must be exactly 64 bytes, not {}",
                        payload.len()
                    )
                })?;
                let ctx = ValidateCtx {
                    blocksize: self.blocksize,
                    maxbytes: self.maxbytes,
                    has_cache: false,
                    devices: (!self.devices.is_empty()).then_some(&self.devices[..]),
                    post_v7: true,
                };
                validate_begin_reply_with(arg, &out, &ctx).map_err(|e| {
                    format!(
                        "§7.1: {e} (the kernel fails the I/O with {})",
                        super::compare::errno_name(-e.errno())
                    )
                })
            }
            Op::IomapIoend(_) => {
                IomapIoendOut::read_from_bytes(payload)
                    .map(|_| ())
                    .map_err(|_| {
                        format!(
                            "§1.1: an IOMAP_IOEND reply must be exactly 8 bytes, not {}",
                            payload.len()
                        )
                    })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuse_wire::iomap::{FUSE_IOMAP_OP_WRITE, FUSE_IOMAP_TYPE_MAPPED};
    use fuse_wire::structs::{IomapBeginIn, IomapIo};
    use zerocopy::IntoBytes;

    fn begin(offset: u64, dev: u32) -> Vec<u8> {
        let map = IomapIo {
            offset,
            length: 8192,
            addr: 1 << 20,
            type_: FUSE_IOMAP_TYPE_MAPPED,
            flags: 0,
            dev,
        };
        let out = IomapBeginOut {
            read: map,
            write: IomapIo::pure_overwrite(&map),
        };
        fuse_wire::reply_ok(2, &[out.as_bytes()])
    }

    #[test]
    fn iomap_replies_are_held_to_the_kernel_rules() {
        let op = Op::IomapBegin(IomapBeginIn {
            opflags: FUSE_IOMAP_OP_WRITE,
            pos: 4096,
            count: 4096,
            ..Default::default()
        });
        let mut view = KernelView::new(4096);
        view.devices.push(1);
        assert_eq!(view.check(&op, &begin(0, 1)), Ok(()));
        let err = view.check(&op, &begin(512, 1)).unwrap_err();
        assert!(err.contains("not aligned"), "{err}");
        let err = view.check(&op, &begin(0, 2)).unwrap_err();
        assert!(err.contains("not a registered iomap device"), "{err}");
        let short = fuse_wire::reply_ok(2, &[&[0u8; 32]]);
        let err = view.check(&op, &short).unwrap_err();
        assert!(err.contains("exactly 64 bytes"), "{err}");
        // An error reply carries no mapping.
        assert_eq!(view.check(&op, &fuse_wire::reply_err(2, libc::EIO)), Ok(()));

        // A CONFIG reply sets the block size later mappings are checked against.
        let config = IomapConfigOut {
            flags: FUSE_IOMAP_CONFIG_BLOCKSIZE,
            s_blocksize: 1024,
            ..Default::default()
        };
        let reply = fuse_wire::reply_ok(2, &[config.as_bytes()]);
        view.check(&Op::IomapConfig(Default::default()), &reply)
            .unwrap();
        assert_eq!(view.blocksize, 1024);
        assert_eq!(view.check(&op, &begin(0, 1)), Ok(()));
    }
}
