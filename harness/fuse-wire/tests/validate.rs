//! The kernel's iomap reply rules (protocol doc §7.1, §7.2, §7.10): good replies pass and
//! each broken rule yields its own error.

use fuse_wire::iomap::*;
use fuse_wire::validate::{validate_config_reply, validate_mapping, ConfigError, Slot};
use fuse_wire::*;

const BS: u32 = 4096;

fn begin(opflags: u32, pos: u64, count: u64) -> IomapBeginIn {
    IomapBeginIn {
        opflags,
        reserved: 0,
        attr_ino: 12,
        pos,
        count,
    }
}

fn mapped(offset: u64, length: u64) -> IomapIo {
    IomapIo {
        offset,
        length,
        addr: 1 << 20,
        type_: FUSE_IOMAP_TYPE_MAPPED,
        flags: 0,
        dev: 1,
    }
}

fn hole(offset: u64, length: u64) -> IomapIo {
    IomapIo {
        offset,
        length,
        addr: FUSE_IOMAP_NULL_ADDR,
        type_: FUSE_IOMAP_TYPE_HOLE,
        flags: 0,
        dev: 0,
    }
}

fn overwrite(read: IomapIo) -> IomapBeginOut {
    IomapBeginOut {
        read,
        write: IomapIo::pure_overwrite(&read),
    }
}

#[test]
fn good_replies_pass() {
    let read = begin(0, 8192, 4096);
    assert_eq!(
        validate_begin_reply(&read, &overwrite(mapped(0, 16384)), BS),
        Ok(())
    );
    assert_eq!(
        validate_begin_reply(&read, &overwrite(hole(8192, 4096)), BS),
        Ok(())
    );
    let unwritten = IomapIo {
        type_: FUSE_IOMAP_TYPE_UNWRITTEN,
        flags: FUSE_IOMAP_F_NEW | FUSE_IOMAP_F_DIRTY,
        ..mapped(8192, 4096)
    };
    let write = begin(FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_DIRECT, 8192 + 100, 10);
    assert_eq!(
        validate_begin_reply(&write, &overwrite(unwritten), BS),
        Ok(())
    );
    let delalloc = IomapIo {
        type_: FUSE_IOMAP_TYPE_DELALLOC,
        ..hole(0, 1 << 30)
    };
    assert_eq!(
        validate_begin_reply(&write, &overwrite(delalloc), BS),
        Ok(())
    );
    let inline = IomapIo {
        type_: FUSE_IOMAP_TYPE_INLINE,
        ..hole(0, 4096)
    };
    assert_eq!(
        validate_begin_reply(&begin(0, 0, 60), &overwrite(inline), BS),
        Ok(())
    );
    // Out-of-place (COW) write: separate write mapping.
    let cow = IomapBeginOut {
        read: mapped(0, 8192),
        write: IomapIo {
            addr: 1 << 30,
            ..mapped(4096, 4096)
        },
    };
    assert_eq!(
        validate_begin_reply(&begin(FUSE_IOMAP_OP_WRITE, 5000, 1), &cow, BS),
        Ok(())
    );
    // Every server-settable flag is accepted.
    let flagged = IomapIo {
        flags: FUSE_IOMAP_F_SERVER_MASK,
        ..mapped(0, 4096)
    };
    assert_eq!(
        validate_begin_reply(&read_at(0), &overwrite(flagged), BS),
        Ok(())
    );
    // Mapping shorter than count is fine: iomap asks again for the rest.
    assert_eq!(
        validate_begin_reply(&begin(0, 0, 1 << 20), &overwrite(mapped(0, 4096)), BS),
        Ok(())
    );
}

fn read_at(pos: u64) -> IomapBeginIn {
    begin(0, pos, 1)
}

fn check_read_slot(map: IomapIo) -> Result<(), MappingError> {
    validate_begin_reply(&read_at(map.offset), &overwrite(map), BS)
}

#[test]
fn rule_1_type_and_flags() {
    for t in [5u16, 100, 252, u16::MAX] {
        let m = IomapIo {
            type_: t,
            ..mapped(0, 4096)
        };
        assert_eq!(
            check_read_slot(m),
            Err(MappingError::UnknownType {
                slot: Slot::Read,
                type_: t
            })
        );
    }
    for f in [FUSE_IOMAP_F_SIZE_CHANGED, FUSE_IOMAP_F_STALE, 1 << 15] {
        let m = IomapIo {
            flags: f | FUSE_IOMAP_F_NEW,
            ..mapped(0, 4096)
        };
        assert_eq!(
            check_read_slot(m),
            Err(MappingError::UnknownFlags {
                slot: Slot::Read,
                flags: f | 1
            })
        );
    }
    // The write slot is checked too, even for a read.
    let out = IomapBeginOut {
        read: mapped(0, 4096),
        write: IomapIo {
            type_: 9,
            ..mapped(0, 4096)
        },
    };
    assert_eq!(
        validate_begin_reply(&read_at(0), &out, BS),
        Err(MappingError::UnknownType {
            slot: Slot::Write,
            type_: 9
        })
    );
}

#[test]
fn rule_2_range() {
    assert_eq!(
        check_read_slot(mapped(0, 0)),
        Err(MappingError::ZeroLength { slot: Slot::Read })
    );
    assert_eq!(
        check_read_slot(mapped(512, 4096)),
        Err(MappingError::MisalignedOffset {
            slot: Slot::Read,
            offset: 512,
            blocksize: BS
        })
    );
    assert_eq!(
        check_read_slot(mapped(0, 4097)),
        Err(MappingError::MisalignedLength {
            slot: Slot::Read,
            length: 4097,
            blocksize: BS
        })
    );
    let top = !4095u64; // the last block-aligned offset
    assert_eq!(
        check_read_slot(hole(top, 8192)),
        Err(MappingError::RangeOverflow {
            slot: Slot::Read,
            offset: top,
            length: 8192
        })
    );
    let ctx = ValidateCtx {
        maxbytes: 1 << 20,
        ..ValidateCtx::new(BS)
    };
    let m = hole(1 << 20, 4096);
    assert_eq!(
        validate_begin_reply_with(&read_at(1 << 20), &overwrite(m), &ctx),
        Err(MappingError::BeyondMaxbytes {
            slot: Slot::Read,
            offset: 1 << 20,
            maxbytes: 1 << 20
        })
    );
    assert_eq!(
        validate_begin_reply_with(&read_at(0), &overwrite(hole(0, 1 << 21)), &ctx),
        Ok(())
    );
    // Alignment follows the block size given.
    assert_eq!(
        validate_begin_reply(&read_at(512), &overwrite(hole(512, 512)), 512),
        Ok(())
    );
    assert_eq!(
        validate_begin_reply(&read_at(0), &overwrite(hole(0, 4096)), 3000),
        Err(MappingError::InvalidBlocksize(3000))
    );
    assert_eq!(
        validate_begin_reply(&read_at(0), &overwrite(hole(0, 4096)), 0),
        Err(MappingError::InvalidBlocksize(0))
    );
}

#[test]
fn rule_3_device_and_address() {
    for t in [FUSE_IOMAP_TYPE_MAPPED, FUSE_IOMAP_TYPE_UNWRITTEN] {
        let m = IomapIo {
            type_: t,
            dev: 0,
            ..mapped(0, 4096)
        };
        assert_eq!(
            check_read_slot(m),
            Err(MappingError::MissingDevice {
                slot: Slot::Read,
                type_: t
            })
        );
        let m = IomapIo {
            type_: t,
            addr: FUSE_IOMAP_NULL_ADDR,
            ..mapped(0, 4096)
        };
        assert_eq!(
            check_read_slot(m),
            Err(MappingError::MissingAddr {
                slot: Slot::Read,
                type_: t
            })
        );
    }
    for t in [
        FUSE_IOMAP_TYPE_HOLE,
        FUSE_IOMAP_TYPE_DELALLOC,
        FUSE_IOMAP_TYPE_INLINE,
    ] {
        let m = IomapIo {
            type_: t,
            dev: 3,
            ..hole(0, 4096)
        };
        assert_eq!(
            check_read_slot(m),
            Err(MappingError::UnexpectedDevice {
                slot: Slot::Read,
                type_: t,
                dev: 3
            })
        );
        let m = IomapIo {
            type_: t,
            addr: 0,
            ..hole(0, 4096)
        };
        assert_eq!(
            check_read_slot(m),
            Err(MappingError::UnexpectedAddr {
                slot: Slot::Read,
                type_: t,
                addr: 0
            })
        );
    }
    let out = IomapBeginOut {
        read: IomapIo::pure_overwrite(&mapped(0, 4096)),
        write: IomapIo::pure_overwrite(&mapped(0, 4096)),
    };
    assert_eq!(
        validate_begin_reply(&read_at(0), &out, BS),
        Err(MappingError::PureOverwriteInReadSlot)
    );
    let m = IomapIo {
        addr: u64::MAX - 4095,
        ..mapped(0, 8192)
    };
    assert_eq!(
        check_read_slot(m),
        Err(MappingError::AddrOverflow {
            slot: Slot::Read,
            addr: u64::MAX - 4095,
            length: 8192
        })
    );
    // Registered devices only, when the caller knows them.
    let devs = [1u32, 2];
    let ctx = ValidateCtx {
        devices: Some(&devs),
        ..ValidateCtx::new(BS)
    };
    let m = IomapIo {
        dev: 2,
        ..mapped(0, 4096)
    };
    assert_eq!(
        validate_begin_reply_with(&read_at(0), &overwrite(m), &ctx),
        Ok(())
    );
    let m = IomapIo {
        dev: 7,
        ..mapped(0, 4096)
    };
    assert_eq!(
        validate_begin_reply_with(&read_at(0), &overwrite(m), &ctx),
        Err(MappingError::UnknownDevice {
            slot: Slot::Read,
            dev: 7
        })
    );
}

#[test]
fn rule_4_first_byte_covered() {
    let m = mapped(4096, 4096);
    for pos in [0, 4095, 8192, 1 << 40] {
        assert_eq!(
            validate_begin_reply(&read_at(pos), &overwrite(m), BS),
            Err(MappingError::DoesNotCoverPos {
                slot: Slot::Read,
                pos,
                offset: 4096,
                length: 4096
            })
        );
    }
    for pos in [4096, 6000, 8191] {
        assert_eq!(
            validate_begin_reply(&read_at(pos), &overwrite(m), BS),
            Ok(())
        );
    }
    // The write slot must cover pos as well.
    let out = IomapBeginOut {
        read: mapped(0, 8192),
        write: IomapIo {
            addr: 1 << 30,
            ..mapped(0, 4096)
        },
    };
    assert_eq!(
        validate_begin_reply(&begin(FUSE_IOMAP_OP_WRITE, 5000, 1), &out, BS),
        Err(MappingError::DoesNotCoverPos {
            slot: Slot::Write,
            pos: 5000,
            offset: 0,
            length: 4096
        })
    );
}

#[test]
fn rule_5_cache_types() {
    let nocache = IomapIo {
        type_: FUSE_IOMAP_TYPE_NOCACHE,
        ..hole(0, 4096)
    };
    assert_eq!(
        check_read_slot(nocache),
        Err(MappingError::NoCacheInBegin { slot: Slot::Read })
    );
    let retry = IomapIo {
        type_: FUSE_IOMAP_TYPE_RETRY_CACHE,
        ..hole(0, 4096)
    };
    assert_eq!(
        check_read_slot(retry),
        Err(MappingError::RetryWithoutCache { slot: Slot::Read })
    );
    let ctx = ValidateCtx {
        has_cache: true,
        ..ValidateCtx::new(BS)
    };
    assert_eq!(
        validate_begin_reply_with(&read_at(0), &overwrite(retry), &ctx),
        Ok(())
    );
    let bad_retry = IomapIo { dev: 1, ..retry };
    assert!(matches!(
        validate_begin_reply_with(&read_at(0), &overwrite(bad_retry), &ctx),
        Err(MappingError::UnexpectedDevice { .. })
    ));
}

#[test]
fn rule_6_atomic_post_v7_and_writeback_inline() {
    let atomic = begin(
        FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_DIRECT | FUSE_IOMAP_OP_ATOMIC,
        0,
        4096,
    );
    let plain = overwrite(mapped(0, 4096));
    assert_eq!(
        validate_begin_reply(&atomic, &plain, BS),
        Ok(()),
        "v7 rules do not check atomics"
    );
    let strict = ValidateCtx {
        post_v7: true,
        ..ValidateCtx::new(BS)
    };
    let e = validate_begin_reply_with(&atomic, &plain, &strict).unwrap_err();
    assert_eq!(
        (e, e.errno()),
        (MappingError::AtomicWithoutAtomicMapping, errno::EIO)
    );
    let good = overwrite(IomapIo {
        flags: FUSE_IOMAP_F_ATOMIC_BIO,
        ..mapped(0, 4096)
    });
    assert_eq!(validate_begin_reply_with(&atomic, &good, &strict), Ok(()));
    let hole_atomic = overwrite(IomapIo {
        flags: FUSE_IOMAP_F_ATOMIC_BIO,
        ..hole(0, 4096)
    });
    assert!(validate_begin_reply_with(&atomic, &hole_atomic, &strict).is_err());

    let inline = overwrite(IomapIo {
        type_: FUSE_IOMAP_TYPE_INLINE,
        ..hole(0, 4096)
    });
    assert_eq!(
        validate_begin_reply(&begin(FUSE_IOMAP_OP_WRITEBACK, 0, 4096), &inline, BS),
        Err(MappingError::InlineForWriteback)
    );
    assert_eq!(
        validate_begin_reply(&begin(FUSE_IOMAP_OP_WRITE, 0, 4096), &inline, BS),
        Ok(())
    );
}

#[test]
fn errnos() {
    assert_eq!(
        MappingError::ZeroLength { slot: Slot::Read }.errno(),
        errno::EUCLEAN
    );
    assert_eq!(MappingError::PureOverwriteInReadSlot.errno(), 117);
    assert_eq!(MappingError::InvalidBlocksize(3).errno(), errno::EINVAL);
}

#[test]
fn single_mappings_for_upserts() {
    let ctx = ValidateCtx::new(BS);
    assert_eq!(validate_mapping(&mapped(0, 4096), Slot::Read, &ctx), Ok(()));
    assert_eq!(
        validate_mapping(
            &IomapIo::pure_overwrite(&mapped(0, 4096)),
            Slot::Write,
            &ctx
        ),
        Ok(())
    );
}

fn config() -> IomapConfigOut {
    IomapConfigOut {
        flags: FUSE_IOMAP_CONFIG_UUID
            | FUSE_IOMAP_CONFIG_BLOCKSIZE
            | FUSE_IOMAP_CONFIG_TIME
            | FUSE_IOMAP_CONFIG_MAXBYTES,
        s_uuid_len: 16,
        s_blocksize: 4096,
        s_time_gran: 1,
        s_maxbytes: 1 << 44,
        ..Default::default()
    }
}

#[test]
fn config_reply_rules() {
    assert_eq!(validate_config_reply(&config(), true), Ok(()));
    let c = IomapConfigOut {
        flags: 1 << 7 | 1,
        ..config()
    };
    assert_eq!(
        validate_config_reply(&c, false),
        Err(ConfigError::UnknownFlags(1 << 7))
    );
    let c = IomapConfigOut {
        s_uuid_len: 17,
        ..config()
    };
    assert_eq!(
        validate_config_reply(&c, false),
        Err(ConfigError::UuidTooLong(17))
    );
    let c = IomapConfigOut {
        s_pad: [0, 1, 0],
        ..config()
    };
    assert_eq!(
        validate_config_reply(&c, false),
        Err(ConfigError::NonzeroPad)
    );
    // Post-v7 checks apply only when asked, and only to fields flagged valid.
    let c = IomapConfigOut {
        s_time_gran: 0,
        ..config()
    };
    assert_eq!(validate_config_reply(&c, false), Ok(()));
    assert_eq!(
        validate_config_reply(&c, true),
        Err(ConfigError::TimeGran(0))
    );
    let c = IomapConfigOut {
        s_time_gran: 0,
        flags: FUSE_IOMAP_CONFIG_UUID,
        ..config()
    };
    assert_eq!(validate_config_reply(&c, true), Ok(()));
    let c = IomapConfigOut {
        s_maxbytes: -1,
        ..config()
    };
    assert_eq!(
        validate_config_reply(&c, true),
        Err(ConfigError::Maxbytes(-1))
    );
    for bs in [0, 256, 3000, 1 << 17] {
        let c = IomapConfigOut {
            s_blocksize: bs,
            ..config()
        };
        assert_eq!(
            validate_config_reply(&c, true),
            Err(ConfigError::Blocksize(bs))
        );
    }
}

#[test]
fn config_reply_may_be_short() {
    use zerocopy::IntoBytes;
    let mut c = config();
    c.s_id[..4].copy_from_slice(b"ext4");
    c.cache_maxbytes = 1 << 18;
    let full = c.as_bytes();
    assert_eq!(IomapConfigOut::from_reply(full), Some(c));
    let short = IomapConfigOut::from_reply(&full[..IOMAP_CONFIG_OUT_SHORT_LEN]).unwrap();
    assert_eq!(
        short,
        IomapConfigOut {
            cache_maxbytes: 0,
            ..c
        }
    );
    assert_eq!(short.s_id_bytes(), b"ext4");
    assert_eq!(
        IomapConfigOut::from_reply(&[]),
        Some(IomapConfigOut::default())
    );
    assert_eq!(IomapConfigOut::from_reply(&[0; 105]), None);
}
