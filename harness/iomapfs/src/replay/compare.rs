//! Compares a replayed reply with the recorded one field by field, leaving out the fields
//! that legitimately differ between two runs of the same requests on the same image, and
//! names the first field that differs.
//!
//! Left out (RECORD.md says why):
//! - times (`atime`, `mtime`, `ctime` and their nanoseconds; statx's four times): the
//!   server stamps changes and accesses with the clock;
//! - `generation` of entries, and FS_IOC_GETVERSION's value: new inodes get a random one;
//! - `fh` of OPEN/OPENDIR/CREATE: a counter of opens; the server reads it back only to
//!   report write errors to each handle (FSYNC), and a replay's device does not fail.
//!
//! Everything else is compared, inode numbers included: libext2fs allocates inodes and
//! blocks deterministically, so the same requests in the same order on the same image get
//! the same numbers, and a different number is a real difference (later requests name the
//! recorded ones).

use fuse_wire::request::Op;
use fuse_wire::structs::*;

/// The first difference between two replies (or two notifications).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Which part of the message: `error`, `entry_out.attr.size`, `entry[3].name`, ...
    pub field: String,
    pub recorded: String,
    pub replayed: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: recorded {}, replayed {}",
            self.field, self.recorded, self.replayed
        )
    }
}

const ATTR_TIMES: &[&str] = &[
    "attr.atime",
    "attr.mtime",
    "attr.ctime",
    "attr.atimensec",
    "attr.mtimensec",
    "attr.ctimensec",
];
const ENTRY_VARIES: &[&str] = &[
    "generation",
    "attr.atime",
    "attr.mtime",
    "attr.ctime",
    "attr.atimensec",
    "attr.mtimensec",
    "attr.ctimensec",
];
const OPEN_VARIES: &[&str] = &["fh"];
const STATX_VARIES: &[&str] = &["stat.atime", "stat.btime", "stat.ctime", "stat.mtime"];

/// One piece of a payload: a wire struct (with its fields) or raw bytes.
struct Item<'a> {
    path: String,
    bytes: &'a [u8],
    /// Empty for raw bytes.
    fields: &'static [Field],
    /// Dotted field paths not compared.
    varies: &'static [&'static str],
    /// Not compared at all (a value that is random by design).
    ignored: bool,
}

/// A part of a reply made of consecutive structs.
struct Part {
    name: &'static str,
    fields: &'static [Field],
    size: usize,
    varies: &'static [&'static str],
}

fn part<T: Fields>(name: &'static str, varies: &'static [&'static str]) -> Part {
    Part {
        name,
        fields: T::FIELDS,
        size: std::mem::size_of::<T>(),
        varies,
    }
}

/// Splits `payload` into the given structs; what is left over is raw `trailing` bytes.
fn structs<'a>(payload: &'a [u8], parts: &[Part]) -> Vec<Item<'a>> {
    let mut items = Vec::new();
    let mut rest = payload;
    for p in parts {
        if rest.is_empty() {
            break;
        }
        let (this, tail) = rest.split_at(p.size.min(rest.len()));
        items.push(Item {
            path: p.name.to_string(),
            bytes: this,
            fields: p.fields,
            varies: p.varies,
            ignored: false,
        });
        rest = tail;
    }
    if !rest.is_empty() {
        items.push(raw("trailing", rest));
    }
    items
}

fn raw<'a>(path: &str, bytes: &'a [u8]) -> Item<'a> {
    Item {
        path: path.to_string(),
        bytes,
        fields: &[],
        varies: &[],
        ignored: false,
    }
}

/// What a successful reply to `op` is made of (raw bytes for a request that did not
/// decode).
fn items<'a>(op: Option<&Op<'_>>, payload: &'a [u8]) -> Result<Vec<Item<'a>>, String> {
    let Some(op) = op else {
        return Ok(vec![raw("data", payload)]);
    };
    Ok(match op {
        Op::Init(_) => structs(payload, &[part::<InitOut>("init_out", &[])]),
        Op::Lookup { .. }
        | Op::Mknod { .. }
        | Op::Mkdir { .. }
        | Op::Symlink { .. }
        | Op::Link { .. } => structs(payload, &[part::<EntryOut>("entry_out", ENTRY_VARIES)]),
        Op::Getattr(_) | Op::Setattr(_) => {
            structs(payload, &[part::<AttrOut>("attr_out", ATTR_TIMES)])
        }
        Op::Open(_) | Op::Opendir(_) => {
            structs(payload, &[part::<OpenOut>("open_out", OPEN_VARIES)])
        }
        Op::Create { .. } | Op::Tmpfile { .. } => structs(
            payload,
            &[
                part::<EntryOut>("entry_out", ENTRY_VARIES),
                part::<OpenOut>("open_out", OPEN_VARIES),
            ],
        ),
        Op::Write { .. } => structs(payload, &[part::<WriteOut>("write_out", &[])]),
        Op::Statfs => structs(payload, &[part::<StatfsOut>("statfs_out", &[])]),
        Op::Statx(_) => structs(payload, &[part::<StatxOut>("statx_out", STATX_VARIES)]),
        Op::Getxattr { arg, .. } | Op::Listxattr(arg) if arg.size == 0 => {
            structs(payload, &[part::<GetxattrOut>("getxattr_out", &[])])
        }
        Op::Lseek(_) => structs(payload, &[part::<LseekOut>("lseek_out", &[])]),
        Op::Ioctl { .. } => {
            let mut items = structs(payload, &[part::<IoctlOut>("ioctl_out", &[])]);
            // FS_IOC_GETVERSION's value after the header: the random generation.
            if let Some(value) = items.iter_mut().find(|i| i.path == "trailing") {
                value.path = "value".into();
                value.ignored = true;
            }
            items
        }
        Op::IomapConfig(_) => structs(payload, &[part::<IomapConfigOut>("iomap_config_out", &[])]),
        Op::IomapBegin(_) => structs(payload, &[part::<IomapBeginOut>("iomap_begin_out", &[])]),
        Op::IomapIoend(_) => structs(payload, &[part::<IomapIoendOut>("iomap_ioend_out", &[])]),
        Op::Readdir(_) => dirents(payload, false)?,
        Op::Readdirplus(_) => dirents(payload, true)?,
        Op::Getxattr { .. } | Op::Listxattr(_) => vec![raw("value", payload)],
        _ => vec![raw("data", payload)],
    })
}

fn dirents(payload: &[u8], plus: bool) -> Result<Vec<Item<'_>>, String> {
    let list = fuse_wire::parse_dirents(payload, plus).map_err(|e| e.to_string())?;
    let head = if plus {
        FUSE_NAME_OFFSET_DIRENTPLUS
    } else {
        FUSE_NAME_OFFSET
    };
    let mut items = Vec::new();
    let mut at = 0;
    for (i, d) in list.iter().enumerate() {
        // parse_dirents checked every record; `get` keeps a mistake here from panicking.
        let rec = payload
            .get(at..at + head)
            .ok_or("record past the payload")?;
        let (entry, dirent) = rec.split_at(head - FUSE_NAME_OFFSET);
        if plus {
            items.push(Item {
                path: format!("entry[{i}].entry_out"),
                bytes: entry,
                fields: EntryOut::FIELDS,
                varies: ENTRY_VARIES,
                ignored: false,
            });
        }
        items.push(Item {
            path: format!("entry[{i}].dirent"),
            bytes: dirent,
            fields: Dirent::FIELDS,
            varies: &[],
            ignored: false,
        });
        items.push(raw(&format!("entry[{i}].name"), d.name));
        at += rec_align(head + d.name.len());
    }
    Ok(items)
}

/// Compares a replayed reply to `op` with the recorded one.
pub fn compare_reply(op: Option<&Op<'_>>, recorded: &[u8], replayed: &[u8]) -> Option<Difference> {
    let (rec, rep) = match framing(recorded, replayed) {
        Ok(views) => views,
        Err(d) => return Some(d),
    };
    if rec.header.error != rep.header.error {
        return Some(Difference {
            field: "error".into(),
            recorded: errno_name(rec.header.error),
            replayed: errno_name(rep.header.error),
        });
    }
    if rec.header.error != 0 {
        return None;
    }
    let parse = |payload| {
        items(op, payload).map_err(|e| Difference {
            field: "payload".into(),
            recorded: String::new(),
            replayed: format!("not a valid listing: {e}"),
        })
    };
    let rec_items = match parse(rec.payload) {
        Ok(i) => i,
        Err(mut d) => {
            std::mem::swap(&mut d.recorded, &mut d.replayed);
            d.replayed = "-".into();
            return Some(d);
        }
    };
    let rep_items = match parse(rep.payload) {
        Ok(i) => i,
        Err(mut d) => {
            d.recorded = "-".into();
            return Some(d);
        }
    };
    compare_items(&rec_items, &rep_items)
}

/// Compares a replayed notification with the recorded one.
pub fn compare_notification(recorded: &[u8], replayed: &[u8]) -> Option<Difference> {
    let (rec, rep) = match framing(recorded, replayed) {
        Ok(views) => views,
        Err(d) => return Some(d),
    };
    if rec.header.error != rep.header.error {
        return Some(Difference {
            field: "notify code".into(),
            recorded: rec.header.error.to_string(),
            replayed: rep.header.error.to_string(),
        });
    }
    let items = |payload| {
        if rec.header.error == fuse_wire::iomap::FUSE_NOTIFY_IOMAP_DEV_INVAL {
            structs(payload, &[part::<IomapDevInvalOut>("dev_inval", &[])])
        } else {
            vec![raw("payload", payload)]
        }
    };
    compare_items(&items(rec.payload), &items(rep.payload))
}

type Views<'a, 'b> = (
    fuse_wire::reply::ReplyView<'a>,
    fuse_wire::reply::ReplyView<'b>,
);

/// Both messages decoded with the kernel's framing checks.
fn framing<'a, 'b>(recorded: &'a [u8], replayed: &'b [u8]) -> Result<Views<'a, 'b>, Difference> {
    let rec = fuse_wire::parse_reply(recorded).map_err(|e| Difference {
        field: "framing".into(),
        recorded: format!("malformed ({e})"),
        replayed: "-".into(),
    })?;
    let rep = fuse_wire::parse_reply(replayed).map_err(|e| Difference {
        field: "framing".into(),
        recorded: "-".into(),
        replayed: format!("malformed ({e})"),
    })?;
    Ok((rec, rep))
}

fn compare_items(rec: &[Item<'_>], rep: &[Item<'_>]) -> Option<Difference> {
    for (a, b) in rec.iter().zip(rep) {
        if a.path != b.path {
            return Some(Difference {
                field: "payload".into(),
                recorded: a.path.clone(),
                replayed: b.path.clone(),
            });
        }
        if let Some(d) = compare_item(a, b) {
            return Some(d);
        }
    }
    if rec.len() != rep.len() {
        let describe = |items: &[Item<'_>]| {
            let bytes: usize = items.iter().map(|i| i.bytes.len()).sum();
            format!("{bytes} bytes")
        };
        return Some(Difference {
            field: "payload length".into(),
            recorded: describe(rec),
            replayed: describe(rep),
        });
    }
    None
}

fn compare_item(a: &Item<'_>, b: &Item<'_>) -> Option<Difference> {
    if a.ignored {
        return None;
    }
    if a.bytes.len() != b.bytes.len() {
        return Some(Difference {
            field: format!("{} length", a.path),
            recorded: a.bytes.len().to_string(),
            replayed: b.bytes.len().to_string(),
        });
    }
    let (mut x, mut y) = (a.bytes.to_vec(), b.bytes.to_vec());
    for path in a.varies {
        if let Some(r) = fuse_wire::structs::field_range(a.fields, path) {
            for buf in [&mut x, &mut y] {
                let end = r.end.min(buf.len());
                if let Some(bytes) = buf.get_mut(r.start..end) {
                    bytes.fill(0);
                }
            }
        }
    }
    let at = x.iter().zip(&y).position(|(p, q)| p != q)?;
    Some(match fuse_wire::structs::field_at(a.fields, at) {
        Some((name, range)) => {
            let end = range.end.min(a.bytes.len());
            Difference {
                field: format!("{}.{name}", a.path),
                recorded: value(&a.bytes[range.start..end]),
                replayed: value(&b.bytes[range.start..end]),
            }
        }
        None => Difference {
            field: format!("{} byte {at}", a.path),
            recorded: format!("{:#04x}", a.bytes[at]),
            replayed: format!("{:#04x}", b.bytes[at]),
        },
    })
}

/// A field's value: an integer (little-endian, as on every host FUSE runs on here) up to
/// 8 bytes, else hex bytes.
fn value(bytes: &[u8]) -> String {
    if bytes.len() <= 8 {
        let mut v = [0u8; 8];
        v[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(v).to_string()
    } else {
        crate::record::hex(bytes)
    }
}

/// `0 (success)` or `-2 (ENOENT)`.
pub fn errno_name(error: i32) -> String {
    if error == 0 {
        return "0 (success)".into();
    }
    format!(
        "{error} ({:?})",
        nix::errno::Errno::from_raw(error.saturating_neg())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuse_wire::reply::DirentBuf;
    use fuse_wire::structs::{GetxattrIn, InitIn, ReadIn};
    use zerocopy::IntoBytes;

    fn entry(size: u64) -> EntryOut {
        EntryOut {
            nodeid: 12,
            generation: 1,
            attr: Attr {
                ino: 12,
                size,
                mtime: 100,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn ok(parts: &[&[u8]]) -> Vec<u8> {
        fuse_wire::reply_ok(2, parts)
    }

    const LOOKUP: Op<'static> = Op::Lookup { name: b"a" };

    #[test]
    fn times_generations_and_handles_are_left_out() {
        let a = entry(5);
        let mut b = entry(5);
        b.generation = 99;
        b.attr.mtime = 200;
        b.attr.ctimensec = 7;
        let (a, b) = (ok(&[a.as_bytes()]), ok(&[b.as_bytes()]));
        assert_eq!(compare_reply(Some(&LOOKUP), &a, &b), None);

        let open = |fh| OpenOut {
            fh,
            open_flags: 1,
            backing_id: 0,
        };
        let create = Op::Create {
            arg: Default::default(),
            name: b"a",
        };
        let a = ok(&[entry(0).as_bytes(), open(1).as_bytes()]);
        let b = ok(&[entry(0).as_bytes(), open(7).as_bytes()]);
        assert_eq!(compare_reply(Some(&create), &a, &b), None);
        let mut other = open(7);
        other.open_flags = 3;
        let c = ok(&[entry(0).as_bytes(), other.as_bytes()]);
        let d = compare_reply(Some(&create), &a, &c).unwrap();
        assert_eq!(d.field, "open_out.open_flags");
        assert_eq!((d.recorded.as_str(), d.replayed.as_str()), ("1", "3"));
    }

    #[test]
    fn the_first_differing_field_is_named_with_both_values() {
        let a = ok(&[entry(5).as_bytes()]);
        let b = ok(&[entry(4096).as_bytes()]);
        let d = compare_reply(Some(&LOOKUP), &a, &b).unwrap();
        assert_eq!(
            d,
            Difference {
                field: "entry_out.attr.size".into(),
                recorded: "5".into(),
                replayed: "4096".into()
            }
        );

        let err = fuse_wire::reply_err(2, libc::ENOENT);
        let d = compare_reply(Some(&LOOKUP), &a, &err).unwrap();
        assert_eq!(d.field, "error");
        assert_eq!(d.replayed, "-2 (ENOENT)");
        assert_eq!(d.recorded, "0 (success)");

        let read = Op::Read(ReadIn::default());
        let d = compare_reply(Some(&read), &ok(&[b"abcd"]), &ok(&[b"abXd"])).unwrap();
        assert_eq!(d.field, "data byte 2");
        let d = compare_reply(Some(&read), &ok(&[b"abcd"]), &ok(&[b"abc"])).unwrap();
        assert_eq!(d.field, "data length");

        let init = Op::Init(InitIn::default());
        let out = InitOut {
            max_write: 4096,
            ..Default::default()
        };
        let d = compare_reply(
            Some(&init),
            &ok(&[InitOut::default().as_bytes()]),
            &ok(&[out.as_bytes()]),
        )
        .unwrap();
        assert_eq!(d.field, "init_out.max_write");

        // A request that did not decode: the bytes are compared as they are.
        assert_eq!(compare_reply(None, &a, &a), None);
        let d = compare_reply(None, &a, &b).unwrap();
        assert!(d.field.starts_with("data byte"), "{d}");

        let size0 = Op::Listxattr(GetxattrIn::default());
        let sized = |size| GetxattrOut { size, padding: 0 };
        let d = compare_reply(
            Some(&size0),
            &ok(&[sized(3).as_bytes()]),
            &ok(&[sized(4).as_bytes()]),
        )
        .unwrap();
        assert_eq!(d.field, "getxattr_out.size");
    }

    #[test]
    fn directory_listings_are_compared_entry_by_entry() {
        let list = |names: &[&str], size: u64| {
            let mut buf = DirentBuf::new(1 << 16);
            for (i, n) in names.iter().enumerate() {
                let mut e = entry(size);
                e.generation = i as u64 * 17;
                assert!(buf.push_plus(&e, i as u64 + 1, 8, n.as_bytes()));
            }
            ok(&[buf.as_bytes()])
        };
        let plus = Op::Readdirplus(ReadIn::default());
        assert_eq!(
            compare_reply(Some(&plus), &list(&["a", "b"], 1), &list(&["a", "b"], 1)),
            None
        );
        let d = compare_reply(Some(&plus), &list(&["a", "b"], 1), &list(&["a", "c"], 1)).unwrap();
        assert_eq!(d.field, "entry[1].name byte 0");
        let d = compare_reply(Some(&plus), &list(&["a", "b"], 1), &list(&["a", "b"], 2)).unwrap();
        assert_eq!(d.field, "entry[0].entry_out.attr.size");
        let d = compare_reply(Some(&plus), &list(&["a", "b"], 1), &list(&["a"], 1)).unwrap();
        assert_eq!(d.field, "payload length");
        let d = compare_reply(Some(&plus), &list(&["a"], 1), &ok(&[b"junk"])).unwrap();
        assert_eq!(d.field, "payload");
        assert!(d.replayed.contains("not a valid listing"), "{d}");
    }

    #[test]
    fn notifications_and_framing() {
        let inval = |offset| {
            let out = IomapDevInvalOut {
                dev: 1,
                reserved: 0,
                range: Range {
                    offset,
                    length: 4096,
                },
            };
            fuse_wire::notify(
                fuse_wire::iomap::FUSE_NOTIFY_IOMAP_DEV_INVAL,
                out.as_bytes(),
            )
        };
        assert_eq!(compare_notification(&inval(0), &inval(0)), None);
        let d = compare_notification(&inval(0), &inval(8192)).unwrap();
        assert_eq!(d.field, "dev_inval.range.offset");
        let d = compare_notification(&inval(0), &inval(0)[..20]).unwrap();
        assert_eq!(d.field, "framing");
        let d = compare_reply(Some(&LOOKUP), &[1, 2, 3], &inval(0)).unwrap();
        assert!(d.recorded.starts_with("malformed"), "{d}");
    }
}
