//! The `-o` mount option list: what goes to the kernel, what the server keeps.
//!
//! mount(8) and fstests pass generic flags (`rw`, `nosuid`, `noatime`, ...) next to FUSE
//! options and our own; every word is either understood or rejected with a clear error.

use std::path::PathBuf;

/// How the server decides between classic FUSE I/O and iomap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IomapPolicy {
    /// Use iomap when the kernel offers it.
    #[default]
    Auto,
    /// Require iomap; fail the mount when the kernel does not offer it.
    On,
    /// Never use iomap.
    Off,
}

impl std::str::FromStr for IomapPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" | "required" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("iomap={other}: expected auto, on or off")),
        }
    }
}

/// Which FUSE mount type to use (`-o flavor=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlavorChoice {
    /// `fuseblk` for a block device, `fuse` for an image file.
    #[default]
    Auto,
    /// Always `fuse` (the server flushes when /dev/fuse reports the unmount).
    Fuse,
    /// Always `fuseblk` (DESTROY at unmount); the source must be a block device.
    Fuseblk,
}

impl std::str::FromStr for FlavorChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "fuse" => Ok(Self::Fuse),
            "fuseblk" => Ok(Self::Fuseblk),
            other => Err(format!("flavor={other}: expected auto, fuse or fuseblk")),
        }
    }
}

/// How long the kernel may trust names and attributes it got from us. Every change goes
/// through the kernel, which updates or invalidates what it cached (atime after reads,
/// the parent after a name change, the inode after link/unlink/setattr/write), and no one
/// else changes the filesystem: so a long time is safe, and it spares a LOOKUP or GETATTR
/// round trip for every stat of a name the kernel already knows.
pub const DEFAULT_ATTR_TIMEOUT_SECS: u64 = 60;

/// ext4's default commit interval.
pub const DEFAULT_COMMIT_SECS: u64 = 5;

/// The subtype shown after `fuse.`/`fuseblk.` when none is given.
pub const DEFAULT_SUBTYPE: &str = "iomapfs";

/// Checks a mount subtype: it becomes part of the mount type string and of a helper's
/// file name, so only `[A-Za-z0-9_-]+`.
pub fn validate_subtype(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("subtype must not be empty".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "subtype={s}: `{c}` is not allowed (letters, digits, `_`, `-` only)"
        ));
    }
    Ok(())
}

pub use crate::fault::Fault;

/// Everything `-o` can say, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub read_only: bool,
    /// `remount`: change the flags of the existing mount (mount(8) runs the helper for
    /// `mount -o remount,ro DIR` too); no server is started.
    pub remount: bool,
    /// Run `e2fsck -p` before opening read-write: a filesystem left unclean by a crash is
    /// repaired the way ext2's boot-time fsck would, instead of refused.
    pub preen: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    /// MS_* flags for mount(2) other than MS_RDONLY.
    pub ms_flags: u64,
    pub iomap: IomapPolicy,
    pub threads: usize,
    /// Ask for the kernel's writeback cache in classic mode (see `server::init`).
    pub writeback_cache: bool,
    pub debug: bool,
    /// Where to write the mode in use (`iomap` or `classic`) once INIT is done.
    pub mode_file: Option<PathBuf>,
    /// Name shown as the mount source; defaults to the device path.
    pub fsname: Option<String>,
    /// Seconds the kernel may cache entries and attributes.
    pub attr_timeout: u64,
    /// Where a daemonized server writes its log (otherwise the log is dropped).
    pub log: Option<PathBuf>,
    /// A deliberate bug or failure to inject (builds with the `fault-injection` feature).
    pub fault: Option<Fault>,
    /// Seconds between commits of the allocation metadata (ext4's `commit=`).
    pub commit: u64,
    /// The mount type is `fuse.SUBTYPE` or `fuseblk.SUBTYPE`.
    pub subtype: String,
    pub flavor: FlavorChoice,
    /// Seconds to wait for another process's lock on the source before giving up.
    pub lock_timeout: u64,
    /// Record the session to this file (`.zst`: compressed); see RECORD.md.
    pub record: Option<PathBuf>,
    /// Stop recording before the recording passes this many bytes (uncompressed).
    pub record_max: u64,
    /// Milliseconds between flushes of a compressed recording (0: after every frame).
    pub record_flush_ms: u64,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            remount: false,
            preen: false,
            allow_other: false,
            default_permissions: false,
            ms_flags: 0,
            iomap: IomapPolicy::Auto,
            // Measured on 2 cores (`cargo xtask bench server --quick`, threads 1 to 16):
            // 8 beat 4 on every row (4k O_DIRECT reads 37k -> 45k IOPS), 16 no better.
            threads: 8,
            writeback_cache: true,
            debug: false,
            mode_file: None,
            fsname: None,
            attr_timeout: DEFAULT_ATTR_TIMEOUT_SECS,
            log: None,
            fault: None,
            commit: DEFAULT_COMMIT_SECS,
            subtype: DEFAULT_SUBTYPE.to_string(),
            flavor: FlavorChoice::Auto,
            lock_timeout: 30,
            record: None,
            record_max: crate::record::DEFAULT_RECORD_MAX,
            record_flush_ms: 0,
        }
    }
}

/// The option words this server understands, for `--help`.
pub const HELP: &str = "\
Mount options (-o, comma separated):
  ro, rw                 read-only or read-write (default rw)
  remount                change the existing mount's ro/rw and generic flags (as
                         `mount -o remount,ro DIR` asks); starts no server. A mount
                         started ro stays read-only in the server (EROFS) after rw
  preen                  run `e2fsck -p` first, so a filesystem left unclean by a crash
                         is repaired rather than refused (read-write only)
  allow_other            let other users use the mount (needs root)
  default_permissions    let the kernel check permissions from mode/uid/gid
  iomap=auto|on|off      use FUSE iomap when the kernel offers it (default auto);
                         `on` fails the mount if the kernel does not offer it
  threads=N              /dev/fuse reader threads (default 8, 1..=64); with
                         --vhost-user-socket, the virtio-fs request queues offered
                         (at most 16)
  attr_timeout=SECS      entry/attribute cache time granted to the kernel (default 60)
  writeback_cache, nowriteback_cache
                         let the kernel cache buffered writes and send them in large
                         batches (default on; classic mode over /dev/fuse only). Data
                         written but not yet sent is lost if the server dies, as a
                         kernel filesystem's is in a crash; fsync'd data is not
  mode_file=PATH         write `iomap` or `classic` to PATH once the kernel is connected
  fsname=NAME            source name shown in /proc/mounts
  subtype=NAME           mount type is fuse.NAME / fuseblk.NAME (default iomapfs;
                         letters, digits, _ and - only)
  nosubtype              mount type is plain fuse / fuseblk (what upstream fstests'
                         FSTYP=fuse expects to see)
  flavor=auto|fuse|fuseblk  mount type: auto is fuseblk for a block device, fuse for
                         an image file; fuseblk needs a block device
  lock_timeout=SECS      wait this long for another holder of the source's flock
                         (another server, a fsck wrapper) before failing (default 30)
  log=PATH               append the log of a daemonized server to PATH
  commit=SECS            write changed allocation metadata and sync every SECS seconds
                         (default 5, as ext4; 0 means the default)
  record=FILE            record every request, reply and notification to FILE
                         (FILE.zst: zstd-compressed); `iomapfs replay` plays it back
  record_max=BYTES       stop recording before FILE passes BYTES (uncompressed;
                         suffixes K, M, G; default 1G, at least 64K)
  record_flush=MS        flush a compressed recording at most every MS milliseconds
                         rather than after every frame (fewer, larger writes; a crash
                         loses the frames since the last flush; default 0)
  fault=NAME             TESTS ONLY, in builds with the fault-injection feature:
                         inject a bug or a failure (see src/fault.rs)
  debug                  log every request (also: RUST_LOG=iomapfs=debug)
  Generic flags accepted as mount(8) passes them: dev nodev suid nosuid exec noexec
  atime noatime relatime strictatime nodiratime sync async dirsync lazytime
  and the mount(8) bookkeeping words defaults, auto, noauto, user, nouser, nofail, _netdev.";

impl MountOptions {
    /// Parses one or more comma-separated `-o` lists, later words winning.
    pub fn parse<'a>(lists: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut o = MountOptions::default();
        for list in lists {
            for word in list.split(',').filter(|w| !w.is_empty()) {
                o.apply(word)?;
            }
        }
        Ok(o)
    }

    fn apply(&mut self, word: &str) -> Result<(), String> {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        fn need<'v>(key: &str, v: Option<&'v str>) -> Result<&'v str, String> {
            v.ok_or_else(|| format!("option `{key}` needs a value"))
        }
        let flag = |set: bool, bit: libc::c_ulong, flags: &mut u64| {
            #[allow(clippy::useless_conversion)] // c_ulong is u64 here, not everywhere
            let bit = u64::from(bit);
            if set {
                *flags |= bit
            } else {
                *flags &= !bit
            }
        };
        match key {
            "ro" => self.read_only = true,
            "remount" => self.remount = true,
            "preen" => self.preen = true,
            "rw" => self.read_only = false,
            "allow_other" => self.allow_other = true,
            "default_permissions" => self.default_permissions = true,
            "debug" => self.debug = true,
            "writeback_cache" => self.writeback_cache = true,
            "nowriteback_cache" => self.writeback_cache = false,
            "iomap" => self.iomap = need(key, value)?.parse()?,
            "threads" => {
                let n: usize = need(key, value)?
                    .parse()
                    .map_err(|_| format!("threads={}: not a number", value.unwrap_or("")))?;
                if !(1..=64).contains(&n) {
                    return Err(format!("threads={n}: must be between 1 and 64"));
                }
                self.threads = n;
            }
            "attr_timeout" | "entry_timeout" => {
                self.attr_timeout = need(key, value)?
                    .parse()
                    .map_err(|_| format!("{key}: expected whole seconds"))?
            }
            "mode_file" => self.mode_file = Some(PathBuf::from(need(key, value)?)),
            "fault" => self.fault = Some(crate::fault::parse(need(key, value)?)?),
            "commit" => {
                let secs: u64 = need(key, value)?
                    .parse()
                    .map_err(|_| format!("{key}: expected whole seconds"))?;
                self.commit = if secs == 0 { DEFAULT_COMMIT_SECS } else { secs };
            }
            "log" => self.log = Some(PathBuf::from(need(key, value)?)),
            "record" => self.record = Some(PathBuf::from(need(key, value)?)),
            "record_max" => {
                let v = need(key, value)?;
                let max = parse_bytes(v).ok_or_else(|| {
                    format!("record_max={v}: expected bytes, with an optional K, M or G")
                })?;
                let min = crate::record::MIN_RECORD_MAX;
                if max < min {
                    return Err(format!("record_max={v}: at least {min} bytes"));
                }
                self.record_max = max;
            }
            "record_flush" => {
                self.record_flush_ms = need(key, value)?
                    .parse()
                    .map_err(|_| format!("{key}: expected whole milliseconds"))?
            }
            "fsname" => self.fsname = Some(need(key, value)?.to_string()),
            "subtype" => {
                let v = need(key, value)?;
                validate_subtype(v)?;
                self.subtype = v.to_string();
            }
            "nosubtype" => self.subtype.clear(),
            "flavor" => self.flavor = need(key, value)?.parse()?,
            "lock_timeout" => {
                self.lock_timeout = need(key, value)?
                    .parse()
                    .map_err(|_| format!("{key}: expected whole seconds"))?
            }
            "nosuid" => flag(true, libc::MS_NOSUID, &mut self.ms_flags),
            "suid" => flag(false, libc::MS_NOSUID, &mut self.ms_flags),
            "nodev" => flag(true, libc::MS_NODEV, &mut self.ms_flags),
            "dev" => flag(false, libc::MS_NODEV, &mut self.ms_flags),
            "noexec" => flag(true, libc::MS_NOEXEC, &mut self.ms_flags),
            "exec" => flag(false, libc::MS_NOEXEC, &mut self.ms_flags),
            "noatime" => flag(true, libc::MS_NOATIME, &mut self.ms_flags),
            "atime" => flag(false, libc::MS_NOATIME, &mut self.ms_flags),
            "nodiratime" => flag(true, libc::MS_NODIRATIME, &mut self.ms_flags),
            "relatime" => flag(true, libc::MS_RELATIME, &mut self.ms_flags),
            "strictatime" => flag(true, libc::MS_STRICTATIME, &mut self.ms_flags),
            "sync" => flag(true, libc::MS_SYNCHRONOUS, &mut self.ms_flags),
            "async" => flag(false, libc::MS_SYNCHRONOUS, &mut self.ms_flags),
            "dirsync" => flag(true, libc::MS_DIRSYNC, &mut self.ms_flags),
            "lazytime" => flag(true, libc::MS_LAZYTIME, &mut self.ms_flags),
            // mount(8)/fstab bookkeeping that means nothing to the server.
            "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "nofail" | "_netdev"
            | "loop" | "blkdev" => {}
            other => {
                return Err(format!(
                    "unknown mount option `{other}` (see `iomapfs --help` for the list)"
                ))
            }
        }
        Ok(())
    }
}

/// `1024`, `64K`, `16M`, `1G` (powers of 1024).
pub(crate) fn parse_bytes(s: &str) -> Option<u64> {
    let (digits, shift) = match s.strip_suffix(['K', 'k']) {
        Some(d) => (d, 10),
        None => match s.strip_suffix(['M', 'm']) {
            Some(d) => (d, 20),
            None => match s.strip_suffix(['G', 'g']) {
                Some(d) => (d, 30),
                None => (s, 0),
            },
        },
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_attributes_are_cached_for_a_minute_by_default() {
        let o = MountOptions::parse(["rw"]).unwrap();
        assert_eq!(o.attr_timeout, 60);
        let o = MountOptions::parse(["attr_timeout=1"]).unwrap();
        assert_eq!(o.attr_timeout, 1);
    }

    #[test]
    fn the_writeback_cache_is_asked_for_unless_turned_off() {
        assert!(MountOptions::parse(["rw"]).unwrap().writeback_cache);
        let o = MountOptions::parse(["nowriteback_cache"]).unwrap();
        assert!(!o.writeback_cache);
        let o = MountOptions::parse(["nowriteback_cache", "writeback_cache"]).unwrap();
        assert!(o.writeback_cache);
    }

    #[test]
    fn parses_kernel_generic_and_server_words() {
        let o =
            MountOptions::parse(["rw,nosuid,nodev,allow_other", "iomap=off,threads=2,ro"]).unwrap();
        assert!(o.read_only && o.allow_other && !o.default_permissions);
        assert_eq!(o.iomap, IomapPolicy::Off);
        assert_eq!(o.threads, 2);
        assert_eq!(o.ms_flags, libc::MS_NOSUID | libc::MS_NODEV);
    }

    #[test]
    fn later_words_win_and_flags_clear() {
        let o = MountOptions::parse(["noexec,exec,ro,rw"]).unwrap();
        assert_eq!(o.ms_flags, 0);
        assert!(!o.read_only);
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (bad, says) in [
            ("bogus", "unknown mount option `bogus`"),
            ("iomap=maybe", "expected auto, on or off"),
            ("threads=0", "between 1 and 64"),
            ("threads=x", "not a number"),
            ("mode_file", "needs a value"),
            ("subtype=", "must not be empty"),
            ("subtype=a.b", "`.` is not allowed"),
            ("subtype=a/b", "`/` is not allowed"),
            ("subtype", "needs a value"),
            ("flavor=blk", "expected auto, fuse or fuseblk"),
            ("lock_timeout=-1", "whole seconds"),
            ("commit=soon", "whole seconds"),
            ("record", "needs a value"),
            ("record_max=lots", "expected bytes"),
            ("record_flush=soon", "expected whole milliseconds"),
            ("record_max=1K", "at least 65536 bytes"),
            ("record_max=99999999999G", "expected bytes"),
        ] {
            let err = MountOptions::parse([bad]).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn subtype_flavor_and_lock_timeout() {
        let d = MountOptions::parse([""]).unwrap();
        assert_eq!(
            (d.subtype.as_str(), d.flavor, d.lock_timeout),
            ("iomapfs", FlavorChoice::Auto, 30)
        );
        assert_eq!(
            MountOptions::parse(["subtype=x,nosubtype"])
                .unwrap()
                .subtype,
            ""
        );
        let o = MountOptions::parse(["subtype=ext4,flavor=fuseblk", "lock_timeout=0,flavor=fuse"])
            .unwrap();
        assert_eq!(o.subtype, "ext4");
        assert_eq!(o.flavor, FlavorChoice::Fuse, "the later flavor wins");
        assert_eq!(o.lock_timeout, 0);
        assert_eq!(
            MountOptions::parse(["subtype=A_z-9"]).unwrap().subtype,
            "A_z-9"
        );
    }

    #[test]
    fn commit_interval() {
        assert_eq!(MountOptions::parse([""]).unwrap().commit, 5);
        assert_eq!(MountOptions::parse(["commit=30"]).unwrap().commit, 30);
        assert_eq!(
            MountOptions::parse(["commit=0"]).unwrap().commit,
            5,
            "0 is ext4's default"
        );
    }

    #[test]
    fn record_and_its_bound() {
        let d = MountOptions::parse([""]).unwrap();
        assert_eq!((d.record, d.record_max), (None, 1 << 30));
        let o = MountOptions::parse(["record=/tmp/s.rec,record_max=64K"]).unwrap();
        assert_eq!(o.record, Some(PathBuf::from("/tmp/s.rec")));
        assert_eq!(o.record_max, 64 << 10);
        assert_eq!(parse_bytes("3m"), Some(3 << 20));
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        assert_eq!(parse_bytes("77"), Some(77));
        assert_eq!(parse_bytes("K"), None);
    }
}
