//! The kernel's checks of a server's iomap replies, as pure functions.
//!
//! [`validate_begin_reply`] implements protocol doc §7.1 (TREE-iomap.c): each numbered rule
//! is one or more [`MappingError`] variants, checked in the doc's order, read slot first.
//! Used by the kernel model (which must refuse what the kernel refuses) and by the server's
//! debug assertions (which must never send it).

use crate::errno::{EINVAL, EIO, EUCLEAN};
use crate::iomap::*;
use crate::structs::{IomapBeginIn, IomapBeginOut, IomapConfigOut, IomapIo};

/// Which half of `fuse_iomap_begin_out` a mapping is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `read`.
    Read,
    /// `write`.
    Write,
}

/// The inode and connection state the kernel validates against.
#[derive(Debug, Clone, Copy)]
pub struct ValidateCtx<'a> {
    /// Inode block size (sb block size, set by CONFIG_BLOCKSIZE); a power of two.
    pub blocksize: u32,
    /// `s_maxbytes` of the superblock.
    pub maxbytes: i64,
    /// Whether the inode has a mapping cache (cache series), which makes RETRY_CACHE legal.
    pub has_cache: bool,
    /// Registered iomap backing ids; `None` accepts any non-zero id.
    pub devices: Option<&'a [u32]>,
    /// Also apply the stricter post-v7 rule 6 (atomic writes need an atomic mapping).
    pub post_v7: bool,
}

impl ValidateCtx<'_> {
    /// Defaults: maxbytes = `MAX_LFS_FILESIZE`, no cache, any device, v7 rules only.
    pub const fn new(blocksize: u32) -> ValidateCtx<'static> {
        ValidateCtx {
            blocksize,
            maxbytes: MAX_LFS_FILESIZE,
            has_cache: false,
            devices: None,
            post_v7: false,
        }
    }
}

/// A rule of §7.1 (or §7.2) that a mapping breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The block size given to the validator is not a power of two (caller error).
    #[error("block size {0} is not a power of two")]
    InvalidBlocksize(u32),
    /// §7.1 rule 1: unknown mapping type.
    #[error("{slot:?} mapping: unknown type {type_}")]
    UnknownType { slot: Slot, type_: u16 },
    /// §7.1 rule 1: flags outside bits 0..7.
    #[error(
        "{slot:?} mapping: flags {flags:#x} outside the server mask {FUSE_IOMAP_F_SERVER_MASK:#x}"
    )]
    UnknownFlags { slot: Slot, flags: u16 },
    /// §7.1 rule 2: zero length.
    #[error("{slot:?} mapping: zero length")]
    ZeroLength { slot: Slot },
    /// §7.1 rule 2: offset not a multiple of the block size.
    #[error("{slot:?} mapping: offset {offset} not aligned to {blocksize}")]
    MisalignedOffset {
        slot: Slot,
        offset: u64,
        blocksize: u32,
    },
    /// §7.1 rule 2: length not a multiple of the block size.
    #[error("{slot:?} mapping: length {length} not aligned to {blocksize}")]
    MisalignedLength {
        slot: Slot,
        length: u64,
        blocksize: u32,
    },
    /// §7.1 rule 2: offset + length overflows u64.
    #[error("{slot:?} mapping: offset {offset} + length {length} overflows")]
    RangeOverflow {
        slot: Slot,
        offset: u64,
        length: u64,
    },
    /// §7.1 rule 2: offset at or past `s_maxbytes`.
    #[error("{slot:?} mapping: offset {offset} at or past maxbytes {maxbytes}")]
    BeyondMaxbytes {
        slot: Slot,
        offset: u64,
        maxbytes: i64,
    },
    /// §7.1 rule 3: MAPPED/UNWRITTEN without a device.
    #[error("{slot:?} mapping: type {type_} needs a device")]
    MissingDevice { slot: Slot, type_: u16 },
    /// §7.1 rule 3: MAPPED/UNWRITTEN without a disk address.
    #[error("{slot:?} mapping: type {type_} needs a disk address")]
    MissingAddr { slot: Slot, type_: u16 },
    /// §7.1 rule 3: device id not registered as an iomap backing device.
    #[error("{slot:?} mapping: device {dev} is not a registered iomap device")]
    UnknownDevice { slot: Slot, dev: u32 },
    /// §7.1 rule 3: HOLE/DELALLOC/INLINE (or RETRY_CACHE, §7.8) with a device.
    #[error("{slot:?} mapping: type {type_} must have dev 0, not {dev}")]
    UnexpectedDevice { slot: Slot, type_: u16, dev: u32 },
    /// §7.1 rule 3: HOLE/DELALLOC/INLINE (or RETRY_CACHE, §7.8) with a disk address.
    #[error("{slot:?} mapping: type {type_} must have a NULL address, not {addr:#x}")]
    UnexpectedAddr { slot: Slot, type_: u16, addr: u64 },
    /// §7.1 rule 3: PURE_OVERWRITE in the read slot.
    #[error("read mapping: PURE_OVERWRITE is only valid in the write slot")]
    PureOverwriteInReadSlot,
    /// §7.1 rule 3: addr + length overflows u64.
    #[error("{slot:?} mapping: addr {addr:#x} + length {length} overflows")]
    AddrOverflow { slot: Slot, addr: u64, length: u64 },
    /// §7.1 rule 4: the mapping does not contain `pos`.
    #[error("{slot:?} mapping [{offset}, +{length}) does not cover pos {pos}")]
    DoesNotCoverPos {
        slot: Slot,
        pos: u64,
        offset: u64,
        length: u64,
    },
    /// §7.1 rule 5: NOCACHE in a BEGIN reply.
    #[error("{slot:?} mapping: NOCACHE is only valid in upsert notifications")]
    NoCacheInBegin { slot: Slot },
    /// §7.1 rule 5: RETRY_CACHE for an inode without a mapping cache.
    #[error("{slot:?} mapping: RETRY_CACHE without a mapping cache")]
    RetryWithoutCache { slot: Slot },
    /// §7.1 rule 6 (post-v7): an ATOMIC op whose write target is not a MAPPED/UNWRITTEN
    /// mapping with `FUSE_IOMAP_F_ATOMIC_BIO`.
    #[error("atomic write needs a MAPPED/UNWRITTEN target with ATOMIC_BIO")]
    AtomicWithoutAtomicMapping,
    /// §7.2: an INLINE mapping for pagecache writeback.
    #[error("INLINE mapping returned for writeback")]
    InlineForWriteback,
}

impl MappingError {
    /// The errno the kernel fails the I/O with: EUCLEAN (= EFSCORRUPTED) for §7.1 rules 1-5,
    /// EIO for rule 6 and §7.2, EINVAL for a bad block size argument.
    pub fn errno(&self) -> i32 {
        match self {
            MappingError::InvalidBlocksize(_) => EINVAL,
            MappingError::AtomicWithoutAtomicMapping | MappingError::InlineForWriteback => EIO,
            _ => EUCLEAN,
        }
    }
}

/// Validate a BEGIN reply with default context ([`ValidateCtx::new`]).
pub fn validate_begin_reply(
    input: &IomapBeginIn,
    out: &IomapBeginOut,
    blocksize: u32,
) -> Result<(), MappingError> {
    validate_begin_reply_with(input, out, &ValidateCtx::new(blocksize))
}

/// Validate a BEGIN reply as the kernel does (§7.1): both slots are always checked.
pub fn validate_begin_reply_with(
    input: &IomapBeginIn,
    out: &IomapBeginOut,
    ctx: &ValidateCtx<'_>,
) -> Result<(), MappingError> {
    validate_mapping(&out.read, Slot::Read, ctx)?;
    validate_mapping(&out.write, Slot::Write, ctx)?;
    // Rule 4: each mapping covers the first byte. PURE_OVERWRITE carries read's range
    // (§7.1 first bullet), so it is held to the same rule.
    for (slot, map) in [(Slot::Read, &out.read), (Slot::Write, &out.write)] {
        // Rules 1-2 already proved offset + length does not overflow.
        let end = map.offset.saturating_add(map.length);
        if input.pos < map.offset || input.pos >= end {
            return Err(MappingError::DoesNotCoverPos {
                slot,
                pos: input.pos,
                offset: map.offset,
                length: map.length,
            });
        }
    }
    // The mapping the kernel writes through: write, or read for a pure overwrite.
    let target = if out.write.type_ == FUSE_IOMAP_TYPE_PURE_OVERWRITE {
        &out.read
    } else {
        &out.write
    };
    // Rule 6 (post-v7 tree).
    if ctx.post_v7 && input.opflags & FUSE_IOMAP_OP_ATOMIC != 0 {
        let space = matches!(
            target.type_,
            FUSE_IOMAP_TYPE_MAPPED | FUSE_IOMAP_TYPE_UNWRITTEN
        );
        if !space || target.flags & FUSE_IOMAP_F_ATOMIC_BIO == 0 {
            return Err(MappingError::AtomicWithoutAtomicMapping);
        }
    }
    // §7.2: writeback cannot go to inline data.
    if input.opflags & FUSE_IOMAP_OP_WRITEBACK != 0 && target.type_ == FUSE_IOMAP_TYPE_INLINE {
        return Err(MappingError::InlineForWriteback);
    }
    Ok(())
}

/// Rules 1, 2, 3 and 5 of §7.1 for one mapping (also what upserted cache mappings must pass).
pub fn validate_mapping(
    map: &IomapIo,
    slot: Slot,
    ctx: &ValidateCtx<'_>,
) -> Result<(), MappingError> {
    let bs = ctx.blocksize;
    if !bs.is_power_of_two() {
        return Err(MappingError::InvalidBlocksize(bs));
    }
    // Rule 1: known type, flags within bits 0..7.
    let known = matches!(
        map.type_,
        FUSE_IOMAP_TYPE_HOLE
            | FUSE_IOMAP_TYPE_DELALLOC
            | FUSE_IOMAP_TYPE_MAPPED
            | FUSE_IOMAP_TYPE_UNWRITTEN
            | FUSE_IOMAP_TYPE_INLINE
            | FUSE_IOMAP_TYPE_NOCACHE
            | FUSE_IOMAP_TYPE_RETRY_CACHE
            | FUSE_IOMAP_TYPE_PURE_OVERWRITE
    );
    if !known {
        return Err(MappingError::UnknownType {
            slot,
            type_: map.type_,
        });
    }
    if map.flags & !FUSE_IOMAP_F_SERVER_MASK != 0 {
        return Err(MappingError::UnknownFlags {
            slot,
            flags: map.flags,
        });
    }
    // Rule 2: non-empty, block aligned, no overflow, starts below s_maxbytes.
    if map.length == 0 {
        return Err(MappingError::ZeroLength { slot });
    }
    let mask = u64::from(bs) - 1;
    if map.offset & mask != 0 {
        return Err(MappingError::MisalignedOffset {
            slot,
            offset: map.offset,
            blocksize: bs,
        });
    }
    if map.length & mask != 0 {
        return Err(MappingError::MisalignedLength {
            slot,
            length: map.length,
            blocksize: bs,
        });
    }
    if map.offset.checked_add(map.length).is_none() {
        return Err(MappingError::RangeOverflow {
            slot,
            offset: map.offset,
            length: map.length,
        });
    }
    if map.offset >= u64::try_from(ctx.maxbytes).unwrap_or(0) {
        return Err(MappingError::BeyondMaxbytes {
            slot,
            offset: map.offset,
            maxbytes: ctx.maxbytes,
        });
    }
    // Rule 5 before rule 3, so a cache-series type is reported for what makes it invalid
    // rather than for its dev/addr fields.
    match map.type_ {
        FUSE_IOMAP_TYPE_NOCACHE => return Err(MappingError::NoCacheInBegin { slot }),
        FUSE_IOMAP_TYPE_RETRY_CACHE if !ctx.has_cache => {
            return Err(MappingError::RetryWithoutCache { slot })
        }
        _ => {}
    }
    // Rule 3: device/address consistency.
    match map.type_ {
        FUSE_IOMAP_TYPE_MAPPED | FUSE_IOMAP_TYPE_UNWRITTEN => {
            if map.dev == FUSE_IOMAP_DEV_NULL {
                return Err(MappingError::MissingDevice {
                    slot,
                    type_: map.type_,
                });
            }
            if map.addr == FUSE_IOMAP_NULL_ADDR {
                return Err(MappingError::MissingAddr {
                    slot,
                    type_: map.type_,
                });
            }
            if let Some(devs) = ctx.devices {
                if !devs.contains(&map.dev) {
                    return Err(MappingError::UnknownDevice { slot, dev: map.dev });
                }
            }
        }
        FUSE_IOMAP_TYPE_PURE_OVERWRITE => {
            if slot == Slot::Read {
                return Err(MappingError::PureOverwriteInReadSlot);
            }
        }
        // HOLE, DELALLOC, INLINE, and RETRY_CACHE (§7.8: "dev 0, addr NULL").
        _ => {
            if map.dev != FUSE_IOMAP_DEV_NULL {
                return Err(MappingError::UnexpectedDevice {
                    slot,
                    type_: map.type_,
                    dev: map.dev,
                });
            }
            if map.addr != FUSE_IOMAP_NULL_ADDR {
                return Err(MappingError::UnexpectedAddr {
                    slot,
                    type_: map.type_,
                    addr: map.addr,
                });
            }
        }
    }
    if map.addr != FUSE_IOMAP_NULL_ADDR && map.addr.checked_add(map.length).is_none() {
        return Err(MappingError::AddrOverflow {
            slot,
            addr: map.addr,
            length: map.length,
        });
    }
    Ok(())
}

/// A rule of §7.10 that an IOMAP_CONFIG reply breaks (the mount fails with EINVAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Flag bits outside `FUSE_IOMAP_CONFIG_ALL`.
    #[error("unknown config flags {0:#x}")]
    UnknownFlags(u64),
    /// `s_uuid_len` above 16.
    #[error("s_uuid_len {0} exceeds 16")]
    UuidTooLong(u8),
    /// `s_pad` not zero.
    #[error("s_pad is not zero")]
    NonzeroPad,
    /// Post-v7: `s_time_gran` outside 1..=1e9 (with CONFIG_TIME).
    #[error("s_time_gran {0} outside 1..=1000000000")]
    TimeGran(u32),
    /// Post-v7: `s_maxbytes` outside 0..=MAX_LFS_FILESIZE (with CONFIG_MAXBYTES).
    #[error("s_maxbytes {0} is negative")]
    Maxbytes(i64),
    /// Post-v7: `s_blocksize` not a power of two in 512..=65536 (with CONFIG_BLOCKSIZE).
    #[error("s_blocksize {0} is not a valid block size")]
    Blocksize(u32),
}

impl ConfigError {
    /// Always EINVAL.
    pub fn errno(&self) -> i32 {
        EINVAL
    }
}

/// Validate an IOMAP_CONFIG reply (§7.10); `post_v7` adds the stricter later checks.
/// The valid block-size range (512..=64 KiB) is inferred from the block layer's limit.
pub fn validate_config_reply(out: &IomapConfigOut, post_v7: bool) -> Result<(), ConfigError> {
    if out.flags & !FUSE_IOMAP_CONFIG_ALL != 0 {
        return Err(ConfigError::UnknownFlags(
            out.flags & !FUSE_IOMAP_CONFIG_ALL,
        ));
    }
    if usize::from(out.s_uuid_len) > out.s_uuid.len() {
        return Err(ConfigError::UuidTooLong(out.s_uuid_len));
    }
    if out.s_pad != [0; 3] {
        return Err(ConfigError::NonzeroPad);
    }
    if !post_v7 {
        return Ok(());
    }
    if out.flags & FUSE_IOMAP_CONFIG_TIME != 0
        && !(1..=FUSE_IOMAP_MAX_TIME_GRAN).contains(&out.s_time_gran)
    {
        return Err(ConfigError::TimeGran(out.s_time_gran));
    }
    if out.flags & FUSE_IOMAP_CONFIG_MAXBYTES != 0 && out.s_maxbytes < 0 {
        return Err(ConfigError::Maxbytes(out.s_maxbytes));
    }
    let bs = out.s_blocksize;
    if out.flags & FUSE_IOMAP_CONFIG_BLOCKSIZE != 0
        && !(bs.is_power_of_two() && (512..=65536).contains(&bs))
    {
        return Err(ConfigError::Blocksize(bs));
    }
    Ok(())
}
