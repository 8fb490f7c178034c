//! The channels between host and guest: the event file QEMU appends the virtio-serial
//! port to (tailed), the serial console (a socket, copied to console.log and to the
//! supervisor by a thread), sysrq over the console for a hung guest, and appending to
//! run-directory files the guest could have replaced with links.
use nix::fcntl::OFlag;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::console::Watcher;
use crate::framing::{Framer, Line};
use crate::qmp::Qmp;

use super::start::QemuGuard;

/// Most bytes of the event file read per poll, so a flood cannot stall the loop.
const MAX_EVENT_READ: u64 = 1 << 20;

/// Tails a file that another process appends to, as framed lines.
pub(super) struct Tail {
    path: PathBuf,
    file: Option<std::fs::File>,
    framer: Framer,
}

impl Tail {
    /// Skip what earlier boots of the run wrote.
    pub(super) fn from_end(path: PathBuf) -> Self {
        use std::io::Seek;
        let file = std::fs::File::open(&path)
            .ok()
            .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)).ok().map(|_| f));
        Tail {
            path,
            file,
            framer: Framer::default(),
        }
    }

    /// The lines completed since the last call (at most [`MAX_EVENT_READ`] bytes read).
    pub(super) fn lines(&mut self) -> Vec<Line> {
        self.read().0
    }

    /// Lines from one read, and whether the read was cut at [`MAX_EVENT_READ`].
    pub(super) fn read(&mut self) -> (Vec<Line>, bool) {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else {
            return (vec![], false);
        };
        let mut bytes = vec![];
        let _ = f.take(MAX_EVENT_READ).read_to_end(&mut bytes);
        (
            self.framer.push(&bytes),
            bytes.len() as u64 == MAX_EVENT_READ,
        )
    }

    /// The unterminated last line, at the end of the stream.
    pub(super) fn rest(&mut self) -> Option<Line> {
        self.framer.finish()
    }
}

/// Connect to the console socket QEMU is waiting on; a thread copies the
/// console to console.log and to the returned channel.
pub(super) fn attach_console(
    sock: &Path,
    log: &Path,
    qemu: &mut QemuGuard,
    boot_no: u32,
) -> Result<(UnixStream, Receiver<Vec<u8>>), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(e) => {
                if let Some(status) = qemu.exited() {
                    return Err(format!("QEMU exited at start ({status})"));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "cannot connect to the console socket {}: {e}",
                        sock.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    if boot_no > 1 {
        let _ = writeln!(file, "===== vm-test: boot {boot_no} =====");
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = file.write_all(&buf[..n]);
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    Ok((stream, rx))
}

/// Ask the stuck kernel for its blocked tasks and all task states through
/// sysrq on the serial line (a break, then the key), and collect the console.
pub(super) fn capture_task_dump(
    sockets: &Path,
    console: &mut UnixStream,
    rx: &Receiver<Vec<u8>>,
    watcher: &mut Watcher,
    wait: Duration,
) {
    if let Ok(mut qmp) = Qmp::connect(&sockets.join("qmp.sock")) {
        // '9': console log level 9 so the dumps reach the console; 'w': blocked
        // tasks; 't': every task.
        for key in ["9", "w", "t"] {
            if qmp.send_break("con").is_ok() {
                let _ = console.write_all(key.as_bytes());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // Collect until the console is quiet for a second, at most `wait`.
    let end = Instant::now() + wait;
    let mut last = Instant::now();
    while Instant::now() < end && last.elapsed() < Duration::from_secs(1) {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            watcher.feed(&chunk);
            last = Instant::now();
        }
    }
}

/// Append to a file of the run directory without following a link the guest left there.
pub(super) fn append_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_appended_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.jsonl");
        let mut tail = Tail::from_end(p.clone());
        assert!(tail.lines().is_empty());
        std::fs::write(&p, b"one\ntw\xc3").unwrap();
        let text = |lines: Vec<Line>| lines.iter().map(Line::text).collect::<Vec<_>>();
        assert_eq!(text(tail.lines()), ["one"]);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        // The second byte of "\u{e9}" arrives in the next read: the line is whole.
        f.write_all(b"\xa9\n\nthree\n").unwrap();
        assert_eq!(text(tail.lines()), ["tw\u{e9}", "", "three"]);
    }
}
