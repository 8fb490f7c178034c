//! The fake-QEMU fixture of the supervisor tests: a python script in place of QEMU, and
//! placeholder kernel, image and agent files, in a temporary directory.

use vm::{Accel, Machine, VmSpec};

/// The start of every fake QEMU: the paths QEMU would use, from its arguments (console
/// socket `con`, event file `ev`, 9p share `share`, `pid` file, and `script` from a
/// `fake_script=` word of `-append`), and the pid file written.
const FAKE_QEMU_ARGS: &str = r#"#!/usr/bin/env python3
import json, os, shutil, socket, sys, time
args = sys.argv[1:]
def opts(a):
    return dict(kv.split("=", 1) for kv in a.split(",")[1:] if "=" in kv)
con = ev = pid = share = script = None
for i, a in enumerate(args):
    if a.startswith("socket,id=con,"):
        con = opts(a)["path"]
    if a.startswith("file,id=events,"):
        ev = opts(a)["path"]
    if a.startswith("local,id=share,"):
        share = opts(a)["path"]
    if a == "-pidfile":
        pid = args[i + 1]
    if a == "-append":
        for w in args[i + 1].split():
            if w.startswith("fake_script="):
                script = w.split("=", 1)[1]
open(pid, "w").write(str(os.getpid()))
"#;

/// `script` (python, after [`FAKE_QEMU_ARGS`]) installed as an executable fake QEMU, and a
/// spec that boots it. `None` (the
/// test returns) when python3 is missing, by `test_support::needs`.
pub fn fake_vm(script: &str) -> Option<(tempfile::TempDir, VmSpec)> {
    // python3 runs the fake QEMU.
    if !test_support::needs(test_support::needs::tool("python3")) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    std::fs::write(p("fake-qemu"), format!("{FAKE_QEMU_ARGS}{script}")).unwrap();
    std::fs::set_permissions(
        p("fake-qemu"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for f in ["kernel", "image", "agent"] {
        std::fs::write(p(f), f).unwrap();
    }
    let spec = VmSpec {
        qemu: p("fake-qemu"),
        kernel: p("kernel"),
        image: p("image"),
        agent: p("agent"),
        server_bins: vec![],
        machine: Machine::Microvm,
        accel: Accel::Tcg,
        accel_note: None,
        cpus: 1,
        memory_mb: 256,
        test_disk_mb: 1,
        scratch_disk_mb: 0,
        extra_cmdline: vec![],
        format_test_disk: None,
        extra_disks: vec![],
        virtiofs_server: None,
        share: vm::RunShare::NineP,
    };
    Some((tmp, spec))
}
