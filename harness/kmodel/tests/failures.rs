//! A failure injected at every step of each multi-step metadata operation (issue 17, item
//! 1): `-o fault=fail_step:N:ERRNO` makes the Nth change the server asks of libext2fs fail,
//! for N = 1, 2, ... until the whole session (the operation, then unmount) completes
//! without reaching step N.
//!
//! After each run, a fresh mount (which processes the orphan list, as ext4 does) must show
//! every watched path naming what it named before the operation (it failed) or after it
//! (it succeeded) — never a name lost — and `e2fsck -fn` must find nothing to fix. With a
//! sticky failure (every step from N on fails, so undoing fails too) the filesystem may be
//! left errored; then no inode that had a name may have lost all of them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{server_binary, Fixture};
use fuse_wire::consts::{FUSE_ROOT_ID, RENAME_EXCHANGE};
use kmodel::{Kernel, ServerSpec};

const ENOSPC: i32 = 28;
const EIO: i32 = 5;
const ENOENT: i32 = 2;
const ENOTDIR: i32 = 20;

/// What each watched path names: (inode number, size), or nothing.
type View = BTreeMap<&'static str, Option<(u64, u64)>>;

struct Scenario {
    name: &'static str,
    setup: fn(&mut Kernel) -> kmodel::Result<()>,
    op: fn(&mut Kernel) -> kmodel::Result<()>,
    paths: &'static [&'static str],
}

fn mount(image: &Path, dir: &Path, options: &[String]) -> Kernel {
    let spec = ServerSpec {
        binary: server_binary(),
        image: image.to_path_buf(),
        options: options.to_vec(),
        workdir: dir.to_path_buf(),
        env: Vec::new(),
    };
    Kernel::mount(&spec, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("mount {options:?}: {e}"))
}

fn observe(k: &mut Kernel, paths: &[&'static str]) -> View {
    paths
        .iter()
        .map(|&p| {
            let v = match k.lookup_path(p) {
                Ok(node) => {
                    let a = k.getattr(node).expect("getattr");
                    Some((
                        a.ino,
                        if a.mode & 0o170000 == 0o040000 {
                            0
                        } else {
                            a.size
                        },
                    ))
                }
                Err(e) if matches!(e.errno(), Some(ENOENT | ENOTDIR)) => None,
                Err(e) => panic!("lookup {p}: {e}"),
            };
            (p, v)
        })
        .collect()
}

fn fsck(image: &Path) -> (bool, String) {
    let out = std::process::Command::new(kmodel::image::tool("e2fsck"))
        .arg("-fn")
        .arg(image)
        .output()
        .expect("run e2fsck");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), report)
}

/// The "steps taken" line the server logs at unmount.
fn steps_taken(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split("fault injection: ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("the server did not log its steps:\n{log}"))
}

/// Mounts without a fault (processing orphans), observes, unmounts.
fn verify(image: &Path, dir: &Path, paths: &[&'static str]) -> View {
    let mut k = mount(image, dir, &[]);
    let view = observe(&mut k, paths);
    k.destroy().expect("unmount after verifying");
    view
}

fn run(s: &Scenario, errno: i32, sticky: bool) {
    let fx = Fixture::new(16 << 20, 1024, &[]);
    let base = fx.dir.path().join("base.img");
    let mut k = fx.mount();
    (s.setup)(&mut k).unwrap_or_else(|e| panic!("{}: setup: {e}", s.name));
    k.destroy().unwrap();
    std::fs::copy(&fx.spec.image, &base).unwrap();
    let before = verify(&fx.spec.image, fx.dir.path(), s.paths);

    // The operation without a fault: the "after" state.
    let mut k = mount(&fx.spec.image, fx.dir.path(), &[]);
    (s.op)(&mut k).unwrap_or_else(|e| panic!("{}: without a fault: {e}", s.name));
    k.destroy().unwrap();
    let after = verify(&fx.spec.image, fx.dir.path(), s.paths);
    assert_ne!(
        before, after,
        "{}: the operation changes nothing watched",
        s.name
    );
    let (clean, report) = fsck(&fx.spec.image);
    assert!(clean, "{}: without a fault:\n{report}", s.name);

    let errname = if errno == ENOSPC { "enospc" } else { "eio" };
    for step in 1u64.. {
        assert!(step < 200, "{}: the session never completed", s.name);
        std::fs::copy(&base, &fx.spec.image).unwrap();
        let fault = format!(
            "fault=fail_step:{step}:{errname}{}",
            if sticky { ":sticky" } else { "" }
        );
        let what = format!("{} with {fault}", s.name);
        let mut k = mount(&fx.spec.image, fx.dir.path(), std::slice::from_ref(&fault));
        let result = (s.op)(&mut k);
        if let Err(e) = &result {
            assert!(
                e.errno().is_some(),
                "{what}: the operation failed other than with an errno: {e}"
            );
        }
        let unmounted = k.destroy();
        let log = fx.server_logs();
        if steps_taken(&log) < step {
            // The whole session ran without reaching the failing step: done.
            assert!(
                result.is_ok(),
                "{what}: failed without a failure: {result:?}"
            );
            unmounted.unwrap_or_else(|e| panic!("{what}: unmount: {e}"));
            println!(
                "{}: {} steps, each failed once with {errname}{}",
                s.name,
                step - 1,
                if sticky { " (sticky)" } else { "" }
            );
            return;
        }
        // Only log lines of this run count next time.
        for entry in std::fs::read_dir(fx.dir.path()).unwrap().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".log") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        if let Err(e) = &result {
            assert_eq!(e.errno(), Some(errno), "{what}: {e}");
        }
        if sticky {
            check_sticky(s, &what, &fx.spec.image, fx.dir.path(), &before, &after);
            continue;
        }
        unmounted.unwrap_or_else(|e| panic!("{what}: unmount: {e}"));
        let view = verify(&fx.spec.image, fx.dir.path(), s.paths);
        match &result {
            Ok(()) => assert_eq!(
                view, after,
                "{what}: succeeded, but the names are not as after it"
            ),
            Err(_) => assert_eq!(
                view, before,
                "{what}: failed, but the names are not as before it"
            ),
        }
        let (clean, report) = fsck(&fx.spec.image);
        assert!(clean, "{what} (result {result:?}):\n{report}");
    }
}

/// After a sticky failure the undo may have failed too, leaving the filesystem errored:
/// `e2fsck -fy` must repair it, and afterwards every inode that had a name must still
/// have one — a watched path, or its `#INO` entry in lost+found, where e2fsck puts an
/// inode the interrupted change left without a name (an exchange between its two in-place
/// entry writes). Nothing is lost.
fn check_sticky(s: &Scenario, what: &str, image: &Path, dir: &Path, before: &View, after: &View) {
    let out = std::process::Command::new(kmodel::image::tool("e2fsck"))
        .arg("-fy")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{what}: e2fsck -fy could not repair:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (clean, report) = fsck(image);
    assert!(clean, "{what}: after e2fsck -fy:\n{report}");
    let mut k = mount(image, dir, &["ro".into()]);
    let view = observe(&mut k, s.paths);
    let lost_found = k.lookup(FUSE_ROOT_ID, "lost+found").expect("lost+found");
    let rescued = k.readdir(lost_found).expect("list lost+found");
    k.destroy()
        .unwrap_or_else(|e| panic!("{what}: read-only unmount: {e}"));
    let mut named: BTreeSet<u64> = view.values().flatten().map(|v| v.0).collect();
    named.extend(
        rescued
            .iter()
            .filter_map(|n| n.strip_prefix('#')?.parse::<u64>().ok()),
    );
    for (path, v) in before {
        if let Some((ino, _)) = v {
            let survives = named.contains(ino) || !after.values().flatten().any(|a| a.0 == *ino);
            assert!(survives, "{what}: inode {ino} ({path} before) lost every name: {view:?}, lost+found {rescued:?}");
        }
    }
}

fn file(k: &mut Kernel, path: &str, len: usize) -> kmodel::Result<()> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = if dir.is_empty() {
        FUSE_ROOT_ID
    } else {
        k.lookup_path(dir)?
    };
    let f = k.create(parent, name, 0o644)?;
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
    k.write(f, 0, &data)?;
    k.fsync(f)?;
    k.release(f)
}

fn dirs(k: &mut Kernel, paths: &[&str]) -> kmodel::Result<()> {
    for p in paths {
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        let parent = if dir.is_empty() {
            FUSE_ROOT_ID
        } else {
            k.lookup_path(dir)?
        };
        k.mkdir(parent, name, 0o755)?;
    }
    Ok(())
}

fn node(k: &mut Kernel, path: &str) -> kmodel::Result<u64> {
    if path.is_empty() {
        return Ok(FUSE_ROOT_ID);
    }
    k.lookup_path(path)
}

fn rename(k: &mut Kernel, from: &str, to: &str, flags: u32) -> kmodel::Result<()> {
    let (fd, fname) = from.rsplit_once('/').unwrap_or(("", from));
    let (td, tname) = to.rsplit_once('/').unwrap_or(("", to));
    let (fp, tp) = (node(k, fd)?, node(k, td)?);
    k.rename(fp, fname, tp, tname, flags)
}

const RENAMES: &[Scenario] = &[
    Scenario {
        name: "rename a file within a directory",
        setup: |k| {
            dirs(k, &["d"])?;
            file(k, "d/a", 5000)
        },
        op: |k| rename(k, "d/a", "d/b", 0),
        paths: &["d/a", "d/b"],
    },
    Scenario {
        name: "rename a file across directories",
        setup: |k| {
            dirs(k, &["d1", "d2"])?;
            file(k, "d1/a", 5000)
        },
        op: |k| rename(k, "d1/a", "d2/b", 0),
        paths: &["d1/a", "d2/b"],
    },
    Scenario {
        name: "rename over a file",
        setup: |k| {
            dirs(k, &["d"])?;
            file(k, "d/a", 5000)?;
            file(k, "d/b", 3000)
        },
        op: |k| rename(k, "d/a", "d/b", 0),
        paths: &["d/a", "d/b"],
    },
    Scenario {
        name: "rename over an open file",
        setup: |k| {
            dirs(k, &["d"])?;
            file(k, "d/a", 5000)?;
            file(k, "d/b", 3000)
        },
        op: |k| {
            let b = k.lookup_path("d/b")?;
            k.ensure_open(b)?;
            rename(k, "d/a", "d/b", 0)
        },
        paths: &["d/a", "d/b"],
    },
    Scenario {
        name: "move a directory to another parent",
        setup: |k| {
            dirs(k, &["d1", "d2", "d1/sub"])?;
            file(k, "d1/sub/f", 100)
        },
        op: |k| rename(k, "d1/sub", "d2/moved", 0),
        paths: &["d1/sub", "d2/moved", "d1/sub/f", "d2/moved/f"],
    },
    Scenario {
        name: "move a directory over an empty one",
        setup: |k| {
            dirs(k, &["d1", "d2", "d1/sub", "d2/empty"])?;
            file(k, "d1/sub/f", 100)
        },
        op: |k| rename(k, "d1/sub", "d2/empty", 0),
        paths: &["d1/sub", "d2/empty", "d2/empty/f"],
    },
    Scenario {
        name: "exchange two files",
        setup: |k| {
            dirs(k, &["d"])?;
            file(k, "d/a", 5000)?;
            file(k, "d/b", 3000)
        },
        op: |k| rename(k, "d/a", "d/b", RENAME_EXCHANGE),
        paths: &["d/a", "d/b"],
    },
    Scenario {
        name: "exchange a file and a directory across directories",
        setup: |k| {
            dirs(k, &["d1", "d2", "d2/sub"])?;
            file(k, "d1/a", 5000)?;
            file(k, "d2/sub/f", 10)
        },
        op: |k| rename(k, "d1/a", "d2/sub", RENAME_EXCHANGE),
        paths: &["d1/a", "d2/sub", "d1/a/f", "d2/sub/f"],
    },
];

const OTHERS: &[Scenario] = &[
    Scenario {
        name: "link",
        setup: |k| {
            dirs(k, &["d", "e"])?;
            file(k, "d/a", 5000)
        },
        op: |k| {
            let a = k.lookup_path("d/a")?;
            let e = k.lookup_path("e")?;
            k.link(a, e, "a2").map(drop)
        },
        paths: &["d/a", "e/a2"],
    },
    Scenario {
        name: "unlink the last link",
        setup: |k| {
            dirs(k, &["d"])?;
            file(k, "d/a", 50000)
        },
        op: |k| {
            let d = k.lookup_path("d")?;
            k.unlink(d, "a")
        },
        paths: &["d/a"],
    },
    Scenario {
        name: "unlink the last link of an open file",
        setup: |k| {
            dirs(k, &["d"])?;
            file(k, "d/a", 50000)
        },
        op: |k| {
            let a = k.lookup_path("d/a")?;
            k.ensure_open(a)?;
            let d = k.lookup_path("d")?;
            // The model's unlink also closes and forgets: the orphan is freed at FORGET.
            k.unlink(d, "a")
        },
        paths: &["d/a"],
    },
    Scenario {
        name: "unlink one of two links",
        setup: |k| {
            dirs(k, &["d"])?;
            file(k, "d/a", 5000)?;
            let a = k.lookup_path("d/a")?;
            let d = k.lookup_path("d")?;
            k.link(a, d, "b").map(drop)
        },
        op: |k| {
            let d = k.lookup_path("d")?;
            k.unlink(d, "a")
        },
        paths: &["d/a", "d/b"],
    },
    Scenario {
        name: "mkdir",
        setup: |k| dirs(k, &["d"]),
        op: |k| dirs(k, &["d/new"]),
        paths: &["d/new"],
    },
    Scenario {
        name: "rmdir",
        setup: |k| dirs(k, &["d", "d/gone"]),
        op: |k| {
            let d = k.lookup_path("d")?;
            k.rmdir(d, "gone")
        },
        paths: &["d/gone"],
    },
    Scenario {
        name: "create",
        setup: |k| dirs(k, &["d"]),
        op: |k| {
            let d = k.lookup_path("d")?;
            let f = k.create(d, "c", 0o644)?;
            k.release(f)
        },
        paths: &["d/c"],
    },
    Scenario {
        name: "symlink with a block target",
        setup: |k| dirs(k, &["d"]),
        op: |k| {
            let d = k.lookup_path("d")?;
            k.symlink(d, "s", &"t".repeat(300)).map(drop)
        },
        paths: &["d/s"],
    },
    Scenario {
        name: "truncate down",
        setup: |k| {
            dirs(k, &["d"])?;
            file(k, "d/a", 60000)
        },
        op: |k| {
            let a = k.lookup_path("d/a")?;
            k.truncate(a, 3000)
        },
        paths: &["d/a"],
    },
    Scenario {
        name: "fallocate past the end",
        setup: |k| {
            dirs(k, &["d"])?;
            file(k, "d/a", 3000)
        },
        op: |k| {
            // The FALLOCATE request alone (the model's fallocate follows it with a SETATTR).
            let a = k.lookup_path("d/a")?;
            let fh = k.ensure_open(a)?;
            let arg = fuse_wire::structs::FallocateIn {
                fh,
                offset: 0,
                length: 40000,
                mode: 0,
                padding: 0,
            };
            let req = kmodel::wire::Request::new(fuse_wire::Opcode::Fallocate, a).arg(&arg);
            match k.call_raw(&req)?.error {
                0 => Ok(()),
                e => Err(kmodel::Error::Errno {
                    request: req.summary(),
                    errno: -e,
                }),
            }
        },
        paths: &["d/a"],
    },
];

fn all(list: &[Scenario], errno: i32, sticky: bool) {
    for s in list {
        run(s, errno, sticky);
    }
}

#[test]
fn renames_survive_enospc_at_every_step() {
    all(RENAMES, ENOSPC, false);
}

#[test]
fn renames_survive_eio_at_every_step() {
    all(RENAMES, EIO, false);
}

#[test]
fn renames_never_lose_a_name_when_the_device_dies() {
    all(RENAMES, EIO, true);
}

#[test]
fn other_operations_survive_enospc_at_every_step() {
    all(OTHERS, ENOSPC, false);
}

#[test]
fn other_operations_survive_eio_at_every_step() {
    all(OTHERS, EIO, false);
}
