//! Deliberate bugs and failures, so tests can prove that the kernel model and the
//! durability tests catch them (`-o fault=NAME`). Only builds with the cargo feature
//! `fault-injection` understand the option: kmodel's and the e2e tests turn it on, the
//! shipped binary (`cargo build --release -p iomapfs`) refuses `fault=` and contains none
//! of the names below.
//!
//! Names: `map_off_by_one_block`, `skip_unwritten_conversion`, `lose_append_size`,
//! `late_dev_inval`, `panic_in_mkdir`, `fail_step:N:ERRNO[:sticky]` (ERRNO is `enospc` or
//! `eio`): the Nth change libext2fs is asked to make fails (and, sticky, every later one),
//! counted from when the server starts serving, and `fail_sync:N`: the Nth sync of the
//! device (fsync, syncfs, commit) fails with EIO, as a failed write-back does.

/// A deliberate bug or failure.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "fault-injection", derive(Debug))]
pub enum Fault {
    /// iomap mappings point one block past the data.
    MapOffByOneBlock,
    /// IOEND leaves written unwritten extents unconverted.
    SkipUnwrittenConversion,
    /// IOEND/END forget to persist a size that grew.
    LoseAppendSize,
    /// FUSE_NOTIFY_IOMAP_DEV_INVAL goes out after the metadata lock is released, late
    /// (the order before issue 18), so another request can be handed a freed block first.
    LateDevInval,
    /// MKDIR panics while it holds the metadata lock, after allocating its inode.
    PanicInMkdir,
    /// Step `step` of the changes made through libext2fs fails with `errno`.
    FailStep { step: u64, errno: i32, sticky: bool },
    /// The `nth` sync of the whole device (counted from 1) fails with EIO.
    FailSync { nth: u64 },
}

#[cfg(not(feature = "fault-injection"))]
impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fault")
    }
}

/// Parses the value of `-o fault=`.
#[cfg(feature = "fault-injection")]
pub fn parse(s: &str) -> Result<Fault, String> {
    Ok(match s {
        "map_off_by_one_block" => Fault::MapOffByOneBlock,
        "skip_unwritten_conversion" => Fault::SkipUnwrittenConversion,
        "lose_append_size" => Fault::LoseAppendSize,
        "late_dev_inval" => Fault::LateDevInval,
        "panic_in_mkdir" => Fault::PanicInMkdir,
        _ if s.starts_with("fail_sync:") => {
            let nth = s["fail_sync:".len()..]
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("fault={s}: expected fail_sync:N with N from 1"))?;
            Fault::FailSync { nth }
        }
        _ => return parse_fail_step(s),
    })
}

#[cfg(feature = "fault-injection")]
fn parse_fail_step(s: &str) -> Result<Fault, String> {
    let bad = || {
        format!(
            "fault={s}: expected map_off_by_one_block, skip_unwritten_conversion, \
             lose_append_size, late_dev_inval, panic_in_mkdir, fail_step:N:enospc|eio[:sticky] \
             or fail_sync:N"
        )
    };
    let mut parts = s.split(':');
    if parts.next() != Some("fail_step") {
        return Err(bad());
    }
    let step = parts
        .next()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(bad)?;
    let errno = match parts.next() {
        Some("enospc") => libc::ENOSPC,
        Some("eio") => libc::EIO,
        _ => return Err(bad()),
    };
    let sticky = match parts.next() {
        None => false,
        Some("sticky") => true,
        Some(_) => return Err(bad()),
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Fault::FailStep {
        step,
        errno,
        sticky,
    })
}

/// Without the feature there is nothing to switch on.
#[cfg(not(feature = "fault-injection"))]
pub fn parse(s: &str) -> Result<Fault, String> {
    Err(format!(
        "fault={s}: this iomapfs is built without fault injection (it is for tests: \
         cargo build --features fault-injection)"
    ))
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;

    #[test]
    fn names_and_fail_steps() {
        assert_eq!(parse("late_dev_inval"), Ok(Fault::LateDevInval));
        assert_eq!(
            parse("fail_step:7:enospc"),
            Ok(Fault::FailStep {
                step: 7,
                errno: libc::ENOSPC,
                sticky: false
            })
        );
        assert_eq!(parse("fail_sync:2"), Ok(Fault::FailSync { nth: 2 }));
        assert_eq!(
            parse("fail_step:1:eio:sticky"),
            Ok(Fault::FailStep {
                step: 1,
                errno: libc::EIO,
                sticky: true
            })
        );
        for bad in [
            "nope",
            "fail_step",
            "fail_step:0:eio",
            "fail_step:3:eperm",
            "fail_step:3:eio:x",
            "fail_step:3:eio:sticky:1",
            "fail_sync:0",
            "fail_sync:x",
            "fail_sync:",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(all(test, not(feature = "fault-injection")))]
mod tests {
    #[test]
    fn refused_without_the_feature() {
        let err = super::parse("late_dev_inval").unwrap_err();
        assert!(err.contains("built without fault injection"), "{err}");
    }
}
