//! Is this QEMU usable for the harness? Its version, and a real microvm boot under TCG.
//!
//! The boot needs no kernel: a 100-byte PVH ELF (built here) prints `OK` on the serial port
//! and leaves through `isa-debug-exit`. It exercises what an install can get wrong: the
//! binary and its libraries, the microvm machine, its firmware (qboot, shipped in the
//! firmware packages), PVH loading and the serial port.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest QEMU the harness is tested with (Debian bookworm's).
pub const MIN_VERSION: (u32, u32) = (7, 2);

/// Where the probe kernel is loaded and entered.
const LOAD_ADDR: u64 = 0x10_0000;
/// `isa-debug-exit` turns the byte written to its port into exit status `(byte << 1) | 1`.
const DEBUG_EXIT_PORT: u8 = 0xf4;
const DEBUG_EXIT_BYTE: u8 = 0x10;
const DEBUG_EXIT_STATUS: i32 = ((DEBUG_EXIT_BYTE as i32) << 1) | 1;

/// `qemu --version`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    /// The whole first line (includes the distribution's package version).
    pub line: String,
}

/// Runs `qemu --version` and checks it against [`MIN_VERSION`].
pub fn version(qemu: &Path) -> Result<QemuVersion, String> {
    let out = Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} --version failed ({}): {}{}",
            qemu.display(),
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v = parse_version(&text)
        .ok_or_else(|| format!("{} --version printed no version: {text:?}", qemu.display()))?;
    if (v.major, v.minor) < MIN_VERSION {
        return Err(format!(
            "{} is QEMU {}.{}; the harness needs {}.{} or newer",
            qemu.display(),
            v.major,
            v.minor,
            MIN_VERSION.0,
            MIN_VERSION.1
        ));
    }
    Ok(v)
}

/// Parses `QEMU emulator version 10.0.2 (Debian ...)`.
pub fn parse_version(text: &str) -> Option<QemuVersion> {
    let line = text.lines().find(|l| l.contains("version"))?.trim();
    let number = line.split("version").nth(1)?.split_whitespace().next()?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    Some(QemuVersion {
        major: parts.next()??,
        minor: parts.next()??,
        line: line.to_owned(),
    })
}

/// Boots the probe kernel on `-machine microvm` under TCG. Returns how long it took.
pub fn microvm_boot(qemu: &Path, deadline: Duration) -> Result<Duration, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let kernel = dir.path().join("probe.elf");
    std::fs::write(&kernel, pvh_probe_kernel()).map_err(|e| format!("writing the probe: {e}"))?;
    let start = Instant::now();
    let mut child = Command::new(qemu)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-machine", "microvm", "-accel", "tcg", "-m", "64M"])
        .args(["-serial", "stdio"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(&kernel)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the microvm probe did not finish within {} s",
                    deadline.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    };
    let took = start.elapsed();
    let read = |r: Option<&mut dyn Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    };
    let stdout = read(child.stdout.as_mut().map(|o| o as &mut dyn Read));
    let stderr = read(child.stderr.as_mut().map(|e| e as &mut dyn Read));
    if status.code() == Some(DEBUG_EXIT_STATUS) && stdout.contains("OK") {
        return Ok(took);
    }
    let first_error = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no message)");
    Err(format!(
        "QEMU could not boot a microvm under TCG (exit {status}, serial output {stdout:?}): {first_error}"
    ))
}

/// A minimal ELF64 with a Xen PVH entry note: in 32-bit protected mode it writes "OK\n" to
/// the first serial port and exits QEMU through isa-debug-exit.
pub fn pvh_probe_kernel() -> Vec<u8> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xba, 0xf8, 0x03, 0x00, 0x00, // mov edx, 0x3f8 (COM1)
        0xb0, b'O', 0xee,             // mov al, 'O'; out dx, al
        0xb0, b'K', 0xee,             // mov al, 'K'; out dx, al
        0xb0, b'\n', 0xee,            // mov al, '\n'; out dx, al
        0xb0, DEBUG_EXIT_BYTE,        // mov al, DEBUG_EXIT_BYTE
        0xe6, DEBUG_EXIT_PORT,        // out DEBUG_EXIT_PORT, al
        0xf4, 0xeb, 0xfd,             // hlt; jmp back to hlt
    ];
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let note_off = EHDR + 2 * PHDR;
    // Note: namesz, descsz, type 18 (XEN_ELFNOTE_PHYS32_ENTRY), "Xen\0", the 64-bit entry.
    let mut note = Vec::new();
    for word in [4u32, 8, 18] {
        note.extend_from_slice(&word.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    let code_off = note_off + note.len();

    let mut elf = Vec::with_capacity(code_off + code.len());
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]); // ELF64, LSB, version 1
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // e_entry
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [EHDR, PHDR, 2, 64, 0, 0] {
        elf.extend_from_slice(&(half as u16).to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    let mut phdr = |kind: u32, flags: u32, off: usize, addr: u64, size: usize, align: u64| {
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&flags.to_le_bytes());
        elf.extend_from_slice(&(off as u64).to_le_bytes());
        elf.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
        elf.extend_from_slice(&addr.to_le_bytes()); // p_paddr
        elf.extend_from_slice(&(size as u64).to_le_bytes()); // p_filesz
        elf.extend_from_slice(&(size as u64).to_le_bytes()); // p_memsz
        elf.extend_from_slice(&align.to_le_bytes());
    };
    phdr(1, 5, code_off, LOAD_ADDR, code.len(), 1); // PT_LOAD, R+X
    phdr(4, 4, note_off, 0, note.len(), 4); // PT_NOTE
    elf.extend_from_slice(&note);
    elf.extend_from_slice(code);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_debian_builds() {
        let v = parse_version(
            "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright ...",
        )
        .unwrap();
        assert_eq!((v.major, v.minor), (10, 0));
        assert!(v.line.contains("bpo12"));
        let v =
            parse_version("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)").unwrap();
        assert_eq!((v.major, v.minor), (7, 2));
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(parse_version("QEMU emulator version x.y"), None);
    }

    #[test]
    fn the_probe_kernel_is_a_well_formed_elf() {
        let elf = pvh_probe_kernel();
        assert_eq!(&elf[..4], b"\x7fELF");
        let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
        assert_eq!(u64_at(24), LOAD_ADDR, "e_entry");
        assert_eq!(u64_at(32), 64, "program headers follow the ELF header");
        // The PT_LOAD segment's bytes lie inside the file and start with `mov edx, 0x3f8`.
        let (off, size) = (u64_at(64 + 8) as usize, u64_at(64 + 32) as usize);
        assert_eq!(off + size, elf.len());
        assert_eq!(&elf[off..off + 5], &[0xba, 0xf8, 0x03, 0, 0]);
        // The PT_NOTE names Xen's PHYS32_ENTRY with the load address.
        let note = u64_at(64 + 56 + 8) as usize;
        assert_eq!(
            &elf[note + 8..note + 16],
            &[18, 0, 0, 0, b'X', b'e', b'n', 0]
        );
        assert_eq!(u64_at(note + 16), LOAD_ADDR);
    }

    #[test]
    fn a_missing_binary_is_reported_not_panicked() {
        let e = version(Path::new("/nonexistent/qemu")).unwrap_err();
        assert!(e.contains("cannot run /nonexistent/qemu"), "{e}");
        let e = microvm_boot(Path::new("/nonexistent/qemu"), Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("cannot start"), "{e}");
    }
}
