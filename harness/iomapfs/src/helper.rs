//! The mount(8) helper convention: `mount -t fuse.SUB SOURCE DIR -o OPTS` runs
//! `/sbin/mount.fuse.SUB SOURCE DIR [-sfnv] [-o OPTS] [-t TYPE] [-N NS]`, a link to the
//! `iomapfs` binary. We translate that into our own command line (daemonizing).
//!
//! The name picks the mount type, so a test suite that names the filesystem by its mount
//! type (fstests' FSTYP) gets the one it asked for:
//! - `mount.fuse.iomapfs`: the automatic flavor (fuseblk for a block device), subtype iomapfs;
//! - `mount.fuse.SUB`: `-o flavor=fuse,subtype=SUB`;
//! - `mount.fuseblk.SUB`: `-o flavor=fuseblk,subtype=SUB`.
//!
//! Options the user passes come later and win.

use std::ffi::OsStr;
use std::path::Path;

use crate::options::{validate_subtype, DEFAULT_SUBTYPE};

/// How this process was started.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// As `iomapfs` (or any name that is not a helper name).
    Server,
    /// As a mount(8) helper; `preset` are the `-o` words implied by the name.
    Helper {
        name: String,
        preset: Option<String>,
    },
}

/// Classifies argv[0] by its file name.
pub fn invocation(argv0: &OsStr) -> Result<Invocation, String> {
    let Some(name) = Path::new(argv0).file_name().and_then(OsStr::to_str) else {
        return Ok(Invocation::Server);
    };
    // `fuseblk.` first: `mount.fuse` is a prefix of `mount.fuseblk`.
    let (flavor, sub) = if let Some(sub) = name.strip_prefix("mount.fuseblk.") {
        ("fuseblk", sub)
    } else if let Some(sub) = name.strip_prefix("mount.fuse.") {
        ("fuse", sub)
    } else {
        return Ok(Invocation::Server);
    };
    validate_subtype(sub).map_err(|e| format!("helper name {name}: {e}"))?;
    let preset = match (flavor, sub) {
        ("fuse", DEFAULT_SUBTYPE) => None,
        _ => Some(format!("flavor={flavor},subtype={sub}")),
    };
    Ok(Invocation::Helper {
        name: name.to_string(),
        preset,
    })
}

/// Turns helper arguments (without argv[0]) into `iomapfs` arguments (with argv[0]), the
/// name's `preset` options first so that the user's own options override them.
pub fn translate(
    preset: Option<&str>,
    args: impl IntoIterator<Item = String>,
) -> Result<Vec<String>, String> {
    let mut args = args.into_iter();
    let mut positional = Vec::new();
    let mut options: Vec<String> = preset.into_iter().map(str::to_string).collect();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-o" => options.push(args.next().ok_or("-o needs an option list")?),
            // sloppy, fake, no-mtab, verbose: nothing to do for us.
            "-s" | "-f" | "-n" | "-v" => {}
            "-t" | "-N" => {
                args.next().ok_or(format!("{arg} needs a value"))?;
            }
            s if s.starts_with("-o") => options.push(s[2..].to_string()),
            s if s.starts_with('-') => return Err(format!("unknown flag {s}")),
            _ => positional.push(arg),
        }
    }
    if positional.len() != 2 {
        return Err("usage: mount.fuse.SUBTYPE SOURCE MOUNTPOINT [-o options]".into());
    }
    let mut out = vec!["iomapfs".to_string()];
    out.extend(positional);
    for o in options {
        out.push("-o".into());
        out.push(o);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{FlavorChoice, MountOptions};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn preset_of(argv0: &str) -> Option<String> {
        match invocation(OsStr::new(argv0)).unwrap() {
            Invocation::Helper { preset, .. } => preset,
            Invocation::Server => panic!("{argv0} should be a helper"),
        }
    }

    #[test]
    fn translates_the_mount_helper_convention() {
        let got = translate(
            None,
            s(&[
                "/dev/vdb",
                "/mnt",
                "-n",
                "-o",
                "rw,allow_other",
                "-t",
                "fuse.iomapfs",
            ]),
        )
        .unwrap();
        assert_eq!(
            got,
            s(&["iomapfs", "/dev/vdb", "/mnt", "-o", "rw,allow_other"])
        );
    }

    #[test]
    fn rejects_what_it_cannot_understand() {
        assert!(translate(None, s(&["/dev/vdb"]))
            .unwrap_err()
            .contains("usage"));
        let flag = translate(None, s(&["/dev/vdb", "/mnt", "-x"])).unwrap_err();
        assert!(flag.contains("unknown flag"));
        assert!(translate(None, s(&["/dev/vdb", "/mnt", "-o"]))
            .unwrap_err()
            .contains("needs"));
    }

    #[test]
    fn the_name_picks_flavor_and_subtype() {
        assert_eq!(
            invocation(OsStr::new("iomapfs")).unwrap(),
            Invocation::Server
        );
        assert_eq!(
            invocation(OsStr::new("/usr/bin/mount.ext4")).unwrap(),
            Invocation::Server
        );
        assert_eq!(preset_of("/sbin/mount.fuse.iomapfs"), None, "auto flavor");
        assert_eq!(
            preset_of("mount.fuse.ext4").as_deref(),
            Some("flavor=fuse,subtype=ext4")
        );
        assert_eq!(
            preset_of("/sbin/mount.fuseblk.ext4").as_deref(),
            Some("flavor=fuseblk,subtype=ext4")
        );
        assert_eq!(
            preset_of("mount.fuseblk.iomapfs").as_deref(),
            Some("flavor=fuseblk,subtype=iomapfs")
        );
        for bad in [
            "mount.fuse.",
            "mount.fuseblk.",
            "mount.fuse.a.b",
            "mount.fuse.a b",
        ] {
            let err = invocation(OsStr::new(bad)).unwrap_err();
            assert!(err.contains("helper name"), "{bad}: {err}");
        }
    }

    #[test]
    fn user_options_override_the_name() {
        let Invocation::Helper { preset, .. } =
            invocation(OsStr::new("mount.fuseblk.ext4")).unwrap()
        else {
            panic!("a helper name");
        };
        let args = translate(
            preset.as_deref(),
            s(&["/dev/vdb", "/mnt", "-o", "rw,flavor=fuse"]),
        )
        .unwrap();
        let lists: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "-o")
            .map(|w| w[1].as_str())
            .collect();
        let opts = MountOptions::parse(lists).unwrap();
        assert_eq!(opts.flavor, FlavorChoice::Fuse, "the user's flavor wins");
        assert_eq!(opts.subtype, "ext4", "the name's subtype stays");
    }
}
