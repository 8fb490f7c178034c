//! The recording file format, version 1 (RECORD.md is its description): the header, the
//! frames, and a reader that never panics on a short or corrupt file.

use std::io::{self, Read};

/// The first bytes of every recording.
pub const MAGIC: &[u8; 8] = b"IOMAPREC";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// The first bytes of a zstd frame: a compressed recording starts with them.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Bytes of a frame after its length field and before its message.
pub const FRAME_FIXED: usize = 24;
/// Bytes in front of a frame's message, the length field included.
pub const FRAME_OVERHEAD: usize = 4 + FRAME_FIXED;
/// Largest metadata block (longer metadata is cut at a line when written).
pub const MAX_META: usize = 16 << 10;
/// Largest frame a reader accepts: well above the largest FUSE message (1 MiB of data
/// plus headers), so a corrupt length is caught before it is allocated.
pub const MAX_FRAME: usize = 16 << 20;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request as the transport delivered it.
    Request,
    /// A reply as the server wrote it (`unique` != 0).
    Reply,
    /// A notification as the server wrote it (`unique` 0).
    Notification,
    /// `FUSE_DEV_IOC_BACKING_OPEN` returned this id (the message is the id, u32 LE).
    BackingOpen,
    /// The recording reached `record_max`: nothing after this was recorded.
    Stopped,
    /// The session ended and the recording is complete.
    End,
}

impl Kind {
    pub fn code(self) -> u8 {
        match self {
            Kind::Request => 1,
            Kind::Reply => 2,
            Kind::Notification => 3,
            Kind::BackingOpen => 4,
            Kind::Stopped => 5,
            Kind::End => 6,
        }
    }

    pub fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            1 => Kind::Request,
            2 => Kind::Reply,
            3 => Kind::Notification,
            4 => Kind::BackingOpen,
            5 => Kind::Stopped,
            6 => Kind::End,
            _ => return None,
        })
    }
}

/// One frame: a message and when, where and for whom it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    /// The server thread (Linux thread id) that read or wrote the message.
    pub thread: u32,
    /// Nanoseconds since the recording started (monotonic clock).
    pub time_ns: u64,
    /// The message's `unique` (0 for notifications and markers).
    pub unique: u64,
    /// The message exactly as read or written.
    pub data: Vec<u8>,
}

/// Encodes a frame's length field and fixed part; the message follows.
pub fn frame_head(
    kind: Kind,
    thread: u32,
    time_ns: u64,
    unique: u64,
    data_len: usize,
) -> [u8; FRAME_OVERHEAD] {
    let mut head = [0u8; FRAME_OVERHEAD];
    let len = u32::try_from(FRAME_FIXED + data_len).unwrap_or(u32::MAX);
    head[0..4].copy_from_slice(&len.to_le_bytes());
    head[4] = kind.code();
    // Bytes 5..8: flags and reserved, zero in version 1.
    head[8..12].copy_from_slice(&thread.to_le_bytes());
    head[12..20].copy_from_slice(&time_ns.to_le_bytes());
    head[20..28].copy_from_slice(&unique.to_le_bytes());
    head
}

/// Encodes the header: magic, version, metadata length and the metadata lines.
pub fn header(meta: &Meta) -> Vec<u8> {
    let text = meta.encode();
    let mut out = Vec::with_capacity(16 + text.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// The header's metadata: `key=value` lines, in order. Unknown keys are kept and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub entries: Vec<(String, String)>,
}

impl Meta {
    pub fn set(&mut self, key: &str, value: impl std::fmt::Display) {
        // A value is one line: newlines would start a new key.
        let value = value.to_string().replace(['\n', '\r'], " ");
        self.entries.push((key.to_string(), value));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn encode(&self) -> String {
        let mut text: String = self
            .entries
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        // The reader refuses more; cut at a line boundary so the rest stays readable.
        if text.len() > MAX_META {
            let cut = text[..MAX_META].rfind('\n').map_or(0, |i| i + 1);
            text.truncate(cut);
        }
        text
    }

    fn decode(text: &str) -> Meta {
        let entries = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Meta { entries }
    }
}

/// Why a recording cannot be read (further).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the recording: {0}")]
    Io(#[from] io::Error),
    #[error("not an iomapfs recording (no IOMAPREC magic)")]
    NotARecording,
    #[error("recording format version {0}; this iomapfs reads version {VERSION}")]
    Version(u32),
    #[error("corrupt recording at byte {at}: {what}")]
    Corrupt { at: u64, what: String },
    /// The file ends inside the header or a frame (a server that died mid-write, or a
    /// copy cut short). Everything before `at` was read.
    #[error("the recording ends at byte {at} in the middle of {what}")]
    Truncated { at: u64, what: &'static str },
}

/// Reads a recording frame by frame; a compressed one (zstd) is decompressed on the fly.
/// Positions in errors count bytes of the decompressed recording.
pub struct Reader {
    input: Box<dyn Read>,
    meta: Meta,
    pos: u64,
    /// Set after an error or the end: nothing more is read.
    done: bool,
}

impl Reader {
    /// Opens a recording and reads its header.
    pub fn open(path: &std::path::Path) -> Result<Reader, ReadError> {
        let file = std::fs::File::open(path)?;
        Reader::new(io::BufReader::new(file))
    }

    /// Reads the header from `input` (a plain or a zstd-compressed recording).
    pub fn new(mut input: impl io::BufRead + 'static) -> Result<Reader, ReadError> {
        let compressed = input.fill_buf()?.starts_with(&ZSTD_MAGIC);
        let input: Box<dyn Read> = if compressed {
            Box::new(zstd::stream::read::Decoder::with_buffer(input)?)
        } else {
            Box::new(input)
        };
        let mut reader = Reader {
            input,
            meta: Meta::default(),
            pos: 0,
            done: false,
        };
        let mut fixed = [0u8; 16];
        match reader.read_exact_or_eof(&mut fixed)? {
            Filled::Full => {}
            Filled::Empty | Filled::Partial => {
                // Too short to say anything but what the magic says.
                return Err(ReadError::NotARecording);
            }
        }
        if &fixed[..8] != MAGIC {
            return Err(ReadError::NotARecording);
        }
        let version = u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(ReadError::Version(version));
        }
        let meta_len = u32::from_le_bytes(fixed[12..16].try_into().expect("4 bytes")) as usize;
        if meta_len > MAX_META {
            return Err(ReadError::Corrupt {
                at: 12,
                what: format!("metadata of {meta_len} bytes (at most {MAX_META})"),
            });
        }
        let mut text = vec![0u8; meta_len];
        if reader.read_exact_or_eof(&mut text)? != Filled::Full {
            return Err(ReadError::Truncated {
                at: reader.pos,
                what: "the header",
            });
        }
        let text = String::from_utf8(text).map_err(|_| ReadError::Corrupt {
            at: 16,
            what: "metadata is not UTF-8".into(),
        })?;
        reader.meta = Meta::decode(&text);
        Ok(reader)
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Bytes of the (decompressed) recording read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next frame; `Ok(None)` at a clean end of the file. After an error, `Ok(None)`.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_frame();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        let start = self.pos;
        let mut head = [0u8; FRAME_OVERHEAD];
        match self.read_exact_or_eof(&mut head)? {
            Filled::Empty => return Ok(None),
            Filled::Partial => {
                return Err(ReadError::Truncated {
                    at: start,
                    what: "a frame header",
                })
            }
            Filled::Full => {}
        }
        let le32 = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
        let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        let len = le32(&head[0..4]) as usize;
        if !(FRAME_FIXED..=MAX_FRAME).contains(&len) {
            return Err(ReadError::Corrupt {
                at: start,
                what: format!("frame length {len} outside {FRAME_FIXED}..={MAX_FRAME}"),
            });
        }
        let kind = Kind::from_code(head[4]).ok_or_else(|| ReadError::Corrupt {
            at: start,
            what: format!("unknown frame kind {}", head[4]),
        })?;
        let mut data = vec![0u8; len - FRAME_FIXED];
        if self.read_exact_or_eof(&mut data)? != Filled::Full {
            return Err(ReadError::Truncated {
                at: start,
                what: "a frame",
            });
        }
        Ok(Some(Frame {
            kind,
            thread: le32(&head[8..12]),
            time_ns: le64(&head[12..20]),
            unique: le64(&head[20..28]),
            data,
        }))
    }

    /// Fills `buf` unless the input ends first. A compressed stream cut short reports an
    /// error from the decoder: that, too, is the end of what can be read.
    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> Result<Filled, ReadError> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // zstd reports a stream cut mid-block as an I/O error of kind Other or
                // UnexpectedEof; either way nothing more can be read.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::Other
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.pos += got as u64;
        Ok(match got {
            0 if !buf.is_empty() => Filled::Empty,
            n if n == buf.len() => Filled::Full,
            _ => Filled::Partial,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Filled {
    Empty,
    Partial,
    Full,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A recording in memory: the header, then `frames`.
    pub(crate) fn recording(frames: &[Frame]) -> Vec<u8> {
        let mut meta = Meta::default();
        meta.set("server", "test");
        meta.set("options", "threads=1");
        let mut out = header(&meta);
        for f in frames {
            out.extend_from_slice(&frame_head(
                f.kind,
                f.thread,
                f.time_ns,
                f.unique,
                f.data.len(),
            ));
            out.extend_from_slice(&f.data);
        }
        out
    }

    pub(crate) fn frame(kind: Kind, thread: u32, unique: u64, data: &[u8]) -> Frame {
        Frame {
            kind,
            thread,
            time_ns: 0,
            unique,
            data: data.to_vec(),
        }
    }

    fn read_all(bytes: Vec<u8>) -> Result<(Vec<Frame>, Option<ReadError>), ReadError> {
        let mut reader = Reader::new(io::Cursor::new(bytes))?;
        let mut frames = Vec::new();
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return Ok((frames, None)),
                Err(e) => return Ok((frames, Some(e))),
            }
        }
    }

    fn sample() -> Vec<Frame> {
        vec![
            frame(Kind::Request, 7, 2, &[1u8; 48]),
            frame(Kind::BackingOpen, 7, 0, &1u32.to_le_bytes()),
            frame(Kind::Notification, 7, 0, &[2u8; 40]),
            frame(Kind::Reply, 7, 2, &[3u8; 16]),
            frame(Kind::End, 7, 0, &[]),
        ]
    }

    #[test]
    fn frames_read_back_as_written_plain_and_compressed() {
        let plain = recording(&sample());
        let (frames, err) = read_all(plain.clone()).unwrap();
        assert!(err.is_none());
        assert_eq!(frames, sample());

        let compressed = zstd::encode_all(&plain[..], 3).unwrap();
        let reader = Reader::new(io::Cursor::new(compressed.clone())).unwrap();
        assert_eq!(reader.meta().get("options"), Some("threads=1"));
        let (frames, err) = read_all(compressed).unwrap();
        assert!(err.is_none());
        assert_eq!(frames, sample());
    }

    #[test]
    fn every_truncation_reads_the_whole_frames_before_it() {
        let full = recording(&sample());
        let header_len = full.len()
            - sample()
                .iter()
                .map(|f| FRAME_OVERHEAD + f.data.len())
                .sum::<usize>();
        for cut in 0..full.len() {
            match read_all(full[..cut].to_vec()) {
                Err(ReadError::NotARecording | ReadError::Truncated { .. }) => {
                    assert!(cut < header_len, "the header is whole at {cut}")
                }
                Err(e) => panic!("cut at {cut}: {e}"),
                Ok((frames, end)) => {
                    assert!(cut >= header_len);
                    let whole: usize = frames.iter().map(|f| FRAME_OVERHEAD + f.data.len()).sum();
                    assert_eq!(frames[..], sample()[..frames.len()], "cut at {cut}");
                    match end {
                        None => assert_eq!(header_len + whole, cut),
                        Some(ReadError::Truncated { at, .. }) => {
                            assert_eq!(at as usize, header_len + whole, "cut at {cut}")
                        }
                        Some(e) => panic!("cut at {cut}: {e}"),
                    }
                }
            }
        }
        // A compressed recording cut anywhere never panics either.
        let compressed = zstd::encode_all(&full[..], 3).unwrap();
        for cut in 0..compressed.len() {
            let _ = read_all(compressed[..cut].to_vec());
        }
    }

    /// xorshift64: reproducible noise without a dependency.
    fn noise(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn garbage_never_panics_and_bad_headers_say_why() {
        let full = recording(&sample());
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut bytes = full.clone();
            for _ in 0..1 + noise(&mut seed) % 8 {
                let at = (noise(&mut seed) % bytes.len() as u64) as usize;
                bytes[at] = noise(&mut seed) as u8;
            }
            let _ = read_all(bytes);
            let len = (noise(&mut seed) % 300) as usize;
            let random: Vec<u8> = (0..len).map(|_| noise(&mut seed) as u8).collect();
            assert!(
                read_all(random).is_err(),
                "random bytes are not a recording"
            );
        }

        let mut bad = full.clone();
        bad[8] = 9;
        assert!(matches!(read_all(bad), Err(ReadError::Version(9))));
        let mut bad = full.clone();
        bad[0] = b'X';
        assert!(matches!(read_all(bad), Err(ReadError::NotARecording)));
        let mut bad = full.clone();
        bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_all(bad), Err(ReadError::Corrupt { .. })));

        // A frame length past MAX_FRAME, and an unknown kind, are corruption.
        let header_len = header(&Meta {
            entries: vec![
                ("server".into(), "test".into()),
                ("options".into(), "threads=1".into()),
            ],
        })
        .len();
        let mut bad = full.clone();
        bad[header_len..header_len + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let (frames, err) = read_all(bad).unwrap();
        assert!(frames.is_empty());
        assert!(matches!(err, Some(ReadError::Corrupt { .. })), "{err:?}");
        let mut bad = full;
        bad[header_len + 4] = 77;
        let (_, err) = read_all(bad).unwrap();
        assert!(err.unwrap().to_string().contains("unknown frame kind 77"));
    }

    #[test]
    fn metadata_values_stay_on_one_line() {
        let mut meta = Meta::default();
        meta.set("source", "a\nb=c");
        meta.set("k", 5);
        let bytes = header(&meta);
        let reader = Reader::new(io::Cursor::new(bytes)).unwrap();
        assert_eq!(reader.meta().get("source"), Some("a b=c"));
        assert_eq!(reader.meta().get("k"), Some("5"));
    }
}
