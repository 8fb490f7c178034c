//! Per-test slices of the kernel log, read from /dev/kmsg.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

/// A reader positioned at the end of the kernel log when created.
pub struct KmsgSlice {
    file: Option<File>,
}

impl KmsgSlice {
    pub fn start() -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open("/dev/kmsg")
            .ok()
            .and_then(|mut f| f.seek(SeekFrom::End(0)).ok().map(|_| f));
        KmsgSlice { file }
    }

    /// Everything logged since `start`, as `[seconds] message` lines.
    pub fn collect(mut self) -> String {
        let Some(f) = self.file.as_mut() else {
            return "(no /dev/kmsg)\n".into();
        };
        let mut out = String::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.push_str(&format_record(&String::from_utf8_lossy(&buf[..n]))),
                // EPIPE: records were overwritten; keep reading from the next one.
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EPIPE as i32) => continue,
                Err(_) => break, // EAGAIN: end of the log.
            }
        }
        out
    }
}

/// `"6,123,4567890,-;text\n"` → `"[    4.567890] text\n"` (continuation lines kept).
fn format_record(rec: &str) -> String {
    let Some((head, text)) = rec.split_once(';') else {
        return rec.to_string();
    };
    let usec: u64 = head
        .split(',')
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut lines = text.lines();
    let mut out = format!(
        "[{:5}.{:06}] {}\n",
        usec / 1_000_000,
        usec % 1_000_000,
        lines.next().unwrap_or("")
    );
    for l in lines {
        // Dictionary lines (" KEY=value") are metadata, not text.
        if !l.starts_with(' ') {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::format_record;

    #[test]
    fn formats_kmsg_records() {
        assert_eq!(
            format_record("4,10,1500000,-;hello\n"),
            "[    1.500000] hello\n"
        );
        assert_eq!(
            format_record("6,11,2000001,-;a line\n SUBSYSTEM=block\n"),
            "[    2.000001] a line\n"
        );
    }
}
