//! Line framing for what the guest sends: the serial console and the event stream share
//! this one implementation. Lines are cut at `\n` on bytes, before any decoding, so a
//! UTF-8 character split across two reads stays whole; a line is capped, so a guest that
//! never sends a newline cannot make the host's memory grow without bound.

/// Longest line kept, in bytes. Kernel console lines are under 1 KiB and the largest
/// event (a log message or a reason) a few KiB.
pub const MAX_LINE: usize = 64 * 1024;

/// One line, without its `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line's bytes, at most the cap.
    pub bytes: Vec<u8>,
    /// The line was longer than the cap: `bytes` is its start; the rest, up to the next
    /// newline, was dropped.
    pub truncated: bool,
}

impl Line {
    /// The line as text (invalid UTF-8 replaced), without a trailing `\r`.
    pub fn text(&self) -> String {
        let s = String::from_utf8_lossy(&self.bytes);
        s.strip_suffix('\r').unwrap_or(&s).to_string()
    }

    /// The bytes, escaped into one printable line (for logs that must keep them exactly).
    pub fn escaped(&self) -> String {
        self.bytes.escape_ascii().to_string()
    }
}

/// Splits a byte stream into [`Line`]s.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    cap: usize,
    /// Past the cap: drop bytes until the next newline.
    discarding: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(MAX_LINE)
    }
}

impl Framer {
    pub fn new(cap: usize) -> Self {
        Framer {
            buf: Vec::new(),
            cap: cap.max(1),
            discarding: false,
        }
    }

    /// Feed bytes as they were read; returns the lines they completed. A line that
    /// passes the cap is returned (truncated) as soon as it does.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Line> {
        let mut out = vec![];
        loop {
            let newline = bytes.iter().position(|b| *b == b'\n');
            let part = &bytes[..newline.unwrap_or(bytes.len())];
            if !self.discarding {
                let room = self.cap - self.buf.len();
                if part.len() > room {
                    self.buf.extend_from_slice(&part[..room]);
                    out.push(Line {
                        bytes: std::mem::take(&mut self.buf),
                        truncated: true,
                    });
                    self.discarding = true;
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            let Some(i) = newline else { break };
            if !self.discarding {
                out.push(Line {
                    bytes: std::mem::take(&mut self.buf),
                    truncated: false,
                });
            }
            self.discarding = false;
            bytes = &bytes[i + 1..];
        }
        out
    }

    /// The unterminated last line, if any (at the end of the stream).
    pub fn finish(&mut self) -> Option<Line> {
        let discarding = std::mem::take(&mut self.discarding);
        (!self.buf.is_empty() && !discarding).then(|| Line {
            bytes: std::mem::take(&mut self.buf),
            truncated: false,
        })
    }

    /// Bytes held for the current line (never more than the cap).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line]) -> Vec<String> {
        lines.iter().map(Line::text).collect()
    }

    #[test]
    fn lines_across_reads() {
        let mut f = Framer::new(100);
        assert!(f.push(b"one").is_empty());
        assert_eq!(texts(&f.push(b"\ntwo\r\nthr")), ["one", "two"]);
        assert_eq!(texts(&f.push(b"ee\n\n")), ["three", ""]);
        assert_eq!(f.finish(), None);
        f.push(b"tail");
        assert_eq!(f.finish().unwrap().text(), "tail");
    }

    /// "é" is two bytes and "€" three: split between reads, every byte position.
    #[test]
    fn a_character_split_across_reads_stays_whole() {
        let line = "caf\u{e9} \u{20ac}5 \u{1f980}\n".as_bytes();
        for cut in 0..line.len() {
            let mut f = Framer::new(100);
            let mut got = f.push(&line[..cut]);
            got.extend(f.push(&line[cut..]));
            assert_eq!(got.len(), 1, "cut at {cut}");
            assert_eq!(
                std::str::from_utf8(&got[0].bytes).unwrap(),
                "caf\u{e9} \u{20ac}5 \u{1f980}",
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_line_without_newline_is_capped_and_the_rest_dropped() {
        let mut f = Framer::new(8);
        let got = f.push(b"0123456789abcdef");
        assert_eq!(
            got,
            [Line {
                bytes: b"01234567".to_vec(),
                truncated: true
            }]
        );
        // The rest of that line, however long, is dropped and held nowhere.
        for _ in 0..1000 {
            assert!(f.push(&[b'x'; 4096]).is_empty());
            assert_eq!(f.pending(), 0);
        }
        assert_eq!(texts(&f.push(b"yy\nnext\n")), ["next"]);
        // Exactly the cap is not truncated.
        assert_eq!(
            f.push(b"12345678\n"),
            [Line {
                bytes: b"12345678".to_vec(),
                truncated: false
            }]
        );
        f.push(b"0123456789");
        assert_eq!(f.finish(), None, "the truncated line was already returned");
    }

    #[test]
    fn random_bytes_never_exceed_the_cap() {
        // A fixed-seed xorshift: reproducible garbage with and without newlines.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut f = Framer::new(256);
        let mut total_in = 0usize;
        let mut total_out = 0usize;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 700) as usize;
            let chunk: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32 % 64) & 0xff) as u8)
                .collect();
            total_in += chunk.len();
            for l in f.push(&chunk) {
                assert!(l.bytes.len() <= 256);
                assert!(!l.bytes.contains(&b'\n'));
                total_out += l.bytes.len();
            }
            assert!(f.pending() <= 256);
        }
        assert!(total_out <= total_in);
    }

    #[test]
    fn escaped_keeps_every_byte() {
        let l = Line {
            bytes: vec![b'{', 0, 0xff, b'"', b'\\'],
            truncated: false,
        };
        assert_eq!(l.escaped(), "{\\x00\\xff\\\"\\\\");
    }
}
