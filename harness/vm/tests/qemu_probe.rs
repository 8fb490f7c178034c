//! The install probe against the machine's real QEMU: its version, and a microvm boot of the
//! probe kernel under TCG.

use std::path::Path;
use std::time::Duration;
use test_support::needs::{needs, tool_from};

#[test]
fn installed_qemu_passes_the_probe() {
    if !needs(tool_from("qemu-system-x86_64", "qemu-system-x86")) {
        return;
    }
    let qemu = Path::new("qemu-system-x86_64");
    let v = vm::qemu_probe::version(qemu).expect("a supported QEMU version");
    assert!((v.major, v.minor) >= vm::qemu_probe::MIN_VERSION, "{v:?}");
    let took = vm::qemu_probe::microvm_boot(qemu, Duration::from_secs(30))
        .expect("the probe kernel boots on microvm under TCG");
    eprintln!("{}: microvm probe booted in {took:.2?}", v.line);
}

/// A QEMU that runs but cannot boot (here: `false`) fails the probe with a message.
#[test]
fn a_qemu_that_cannot_boot_fails_the_probe() {
    let e =
        vm::qemu_probe::microvm_boot(Path::new("/bin/false"), Duration::from_secs(5)).unwrap_err();
    assert!(e.contains("could not boot a microvm"), "{e}");
    let e = vm::qemu_probe::version(Path::new("/bin/true")).unwrap_err();
    assert!(e.contains("printed no version"), "{e}");
}
