//! Reply encoding: the bytes a server writes to `/dev/fuse`, and their decoding for a
//! kernel model.
//!
//! A reply is one write: [`OutHeader`] then the payload. Errors are a header alone with a
//! negative errno; notifications use `unique = 0` and put the notify code in `error`.

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::consts::FUSE_NAME_MAX;
use crate::errno::EIO;
use crate::structs::*;

/// The kernel rejects error values at or below `-ERESTARTSYS` (512).
const MAX_ERRNO: i32 = 511;

/// The header error for an errno, as libfuse does it: a positive errno is negated, 0 means
/// success, an already negative errno is kept; anything out of the kernel's range (1..=511)
/// becomes EIO so the reply is never rejected.
pub const fn wire_error(errno: i32) -> i32 {
    if errno == 0 {
        0
    } else if errno > 0 && errno <= MAX_ERRNO {
        -errno
    } else if errno < 0 && errno >= -MAX_ERRNO {
        errno
    } else {
        -EIO
    }
}

/// Encode a header for a message with `payload_len` bytes after it; `None` if the total does
/// not fit the 32-bit length field.
pub fn out_header(unique: u64, error: i32, payload_len: usize) -> Option<OutHeader> {
    let len = u32::try_from(payload_len.checked_add(OUT_HEADER_LEN)?).ok()?;
    Some(OutHeader { len, error, unique })
}

/// A reusable buffer that holds one encoded reply at a time, to avoid an allocation per reply.
#[derive(Debug, Clone, Default)]
pub struct ReplyBuf {
    buf: Vec<u8>,
}

impl ReplyBuf {
    /// An empty buffer.
    pub fn new() -> ReplyBuf {
        ReplyBuf::default()
    }

    /// A success reply carrying the concatenation of `payload`.
    pub fn ok(&mut self, unique: u64, payload: &[&[u8]]) -> &[u8] {
        self.message(unique, 0, payload)
    }

    /// An error reply (`errno` as for [`wire_error`]).
    pub fn err(&mut self, unique: u64, errno: i32) -> &[u8] {
        self.message(unique, wire_error(errno), &[])
    }

    /// A success reply carrying one struct.
    pub fn ok_struct<T: IntoBytes + Immutable>(&mut self, unique: u64, value: &T) -> &[u8] {
        self.message(unique, 0, &[value.as_bytes()])
    }

    /// A notification (`unique` 0, `error` = `code`) carrying the concatenation of `payload`.
    pub fn notify(&mut self, code: i32, payload: &[&[u8]]) -> &[u8] {
        self.message(0, code, payload)
    }

    /// The last encoded message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Encode a message; a payload too large for the length field turns into an EIO reply.
    fn message(&mut self, unique: u64, error: i32, payload: &[&[u8]]) -> &[u8] {
        self.buf.clear();
        let payload_len = payload
            .iter()
            .fold(0usize, |n, p| n.saturating_add(p.len()));
        match out_header(unique, error, payload_len) {
            Some(h) => {
                self.buf.reserve(h.len as usize);
                self.buf.extend_from_slice(h.as_bytes());
                for p in payload {
                    self.buf.extend_from_slice(p);
                }
            }
            None => {
                let h = OutHeader {
                    len: OUT_HEADER_LEN as u32,
                    error: -EIO,
                    unique,
                };
                self.buf.extend_from_slice(h.as_bytes());
            }
        }
        &self.buf
    }
}

/// A success reply carrying the concatenation of `payload`.
pub fn reply_ok(unique: u64, payload: &[&[u8]]) -> Vec<u8> {
    ReplyBuf::new().ok(unique, payload).to_vec()
}

/// An error reply: header only, `error = -errno` (see [`wire_error`]).
pub fn reply_err(unique: u64, errno: i32) -> Vec<u8> {
    ReplyBuf::new().err(unique, errno).to_vec()
}

/// A success reply carrying one struct.
pub fn reply_struct<T: IntoBytes + Immutable>(unique: u64, value: &T) -> Vec<u8> {
    ReplyBuf::new().ok_struct(unique, value).to_vec()
}

/// A notification: `unique` 0, `error` = `code` (`FUSE_NOTIFY_*`), then `payload`.
pub fn notify(code: i32, payload: &[u8]) -> Vec<u8> {
    ReplyBuf::new().notify(code, &[payload]).to_vec()
}

/// A notification whose payload is several pieces (e.g. struct, name, NUL).
pub fn notify_parts(code: i32, payload: &[&[u8]]) -> Vec<u8> {
    ReplyBuf::new().notify(code, payload).to_vec()
}

/// True if the kernel would accept `name` in a directory entry: 1..=1024 bytes, no '/' or NUL.
pub fn valid_entry_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= FUSE_NAME_MAX && !name.iter().any(|&b| b == b'/' || b == 0)
}

/// Packs READDIR (`fuse_dirent`) or READDIRPLUS (`fuse_direntplus`) records, each padded to
/// 8 bytes, up to the size the kernel asked for.
///
/// Names are copied as given; check them with [`valid_entry_name`] (the kernel fails the
/// whole READDIR with EIO on an empty name, a name over 1024 bytes or one containing '/').
#[derive(Debug, Clone)]
pub struct DirentBuf {
    buf: Vec<u8>,
    limit: usize,
}

/// Initial capacity cap, so a huge `size` from the kernel does not allocate up front.
const DIRENT_PREALLOC: usize = 64 << 10;

impl DirentBuf {
    /// An empty buffer that will hold at most `limit` bytes (the request's `ReadIn.size`).
    pub fn new(limit: usize) -> DirentBuf {
        DirentBuf {
            buf: Vec::with_capacity(limit.min(DIRENT_PREALLOC)),
            limit,
        }
    }

    /// Append a READDIR entry; false (and nothing added) if it does not fit.
    /// `type_` is a `DT_*` value (see [`crate::consts::dirent_type`]).
    pub fn push(&mut self, ino: u64, off: u64, type_: u32, name: &[u8]) -> bool {
        let Ok(namelen) = u32::try_from(name.len()) else {
            return false;
        };
        let dirent = Dirent {
            ino,
            off,
            namelen,
            type_,
        };
        self.append(&[], dirent, name)
    }

    /// Append a READDIRPLUS entry; the dirent's inode number is `entry.attr.ino`.
    /// False (and nothing added) if it does not fit.
    pub fn push_plus(&mut self, entry: &EntryOut, off: u64, type_: u32, name: &[u8]) -> bool {
        let Ok(namelen) = u32::try_from(name.len()) else {
            return false;
        };
        let dirent = Dirent {
            ino: entry.attr.ino,
            off,
            namelen,
            type_,
        };
        self.append(entry.as_bytes(), dirent, name)
    }

    /// The bytes one record with a `name_len`-byte name takes, padding included.
    pub fn record_size(name_len: usize, plus: bool) -> usize {
        let entry = if plus {
            std::mem::size_of::<EntryOut>()
        } else {
            0
        };
        rec_align(entry + FUSE_NAME_OFFSET + name_len)
    }

    fn append(&mut self, entry: &[u8], dirent: Dirent, name: &[u8]) -> bool {
        let unpadded = entry.len() + FUSE_NAME_OFFSET + name.len();
        let padded = rec_align(unpadded);
        if padded > self.limit.saturating_sub(self.buf.len()) {
            return false;
        }
        self.buf.extend_from_slice(entry);
        self.buf.extend_from_slice(dirent.as_bytes());
        self.buf.extend_from_slice(name);
        self.buf.resize(self.buf.len() + padded - unpadded, 0);
        true
    }

    /// The packed records.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes used so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True if no entry was added.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Drop all entries and set a new limit, keeping the allocation.
    pub fn reset(&mut self, limit: usize) {
        self.buf.clear();
        self.limit = limit;
    }

    /// The packed records, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

// ---- decoding, for the kernel side (kmodel, tests) ------------------------------------------

/// A decoded reply or notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyView<'a> {
    /// The header as received.
    pub header: OutHeader,
    /// The bytes after the header.
    pub payload: &'a [u8],
}

impl ReplyView<'_> {
    /// True for a notification (`unique` 0; `header.error` is the code).
    pub fn is_notification(&self) -> bool {
        self.header.unique == 0
    }
}

/// Why the kernel would reject a message written to `/dev/fuse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Fewer bytes than a reply header.
    #[error("reply of {len} bytes is shorter than the {OUT_HEADER_LEN}-byte header")]
    TruncatedHeader { len: usize },
    /// `header.len` differs from the bytes written.
    #[error("reply header length {header_len} but {buf_len} bytes were written")]
    LengthMismatch { header_len: u32, buf_len: usize },
    /// A reply error outside -511..=0.
    #[error("reply error {error} is not 0 or a negative errno above -512")]
    ErrorOutOfRange { error: i32 },
    /// An error reply with a payload.
    #[error("error reply {error} carries {len} payload bytes")]
    ErrorWithPayload { error: i32, len: usize },
}

/// Decode one message written by a server, with the kernel's checks (`fuse_dev_do_write`).
pub fn parse_reply(buf: &[u8]) -> Result<ReplyView<'_>, ReplyError> {
    let (header, payload) = OutHeader::read_from_prefix(buf)
        .map_err(|_| ReplyError::TruncatedHeader { len: buf.len() })?;
    if header.len as usize != buf.len() {
        return Err(ReplyError::LengthMismatch {
            header_len: header.len,
            buf_len: buf.len(),
        });
    }
    if header.unique != 0 {
        if header.error > 0 || header.error < -MAX_ERRNO {
            return Err(ReplyError::ErrorOutOfRange {
                error: header.error,
            });
        }
        if header.error != 0 && !payload.is_empty() {
            return Err(ReplyError::ErrorWithPayload {
                error: header.error,
                len: payload.len(),
            });
        }
    }
    Ok(ReplyView { header, payload })
}

/// One decoded directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirentView<'a> {
    /// The entry reply of a READDIRPLUS record; `None` for READDIR.
    pub entry: Option<EntryOut>,
    /// The dirent header.
    pub dirent: Dirent,
    /// The name (`dirent.namelen` bytes).
    pub name: &'a [u8],
}

/// Why a READDIR/READDIRPLUS payload is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DirentError {
    /// A record with an empty name, a name over 1024 bytes, or a name containing '/'
    /// (the kernel fails the READDIR with EIO).
    #[error("record at byte {at}: invalid name")]
    BadName { at: usize },
    /// Bytes at the end that do not form a whole padded record (the kernel silently ignores
    /// them; we report them because a server should never send them).
    #[error("record at byte {at}: truncated")]
    Truncated { at: usize },
}

/// Decode a READDIR (`plus == false`) or READDIRPLUS payload.
pub fn parse_dirents(buf: &[u8], plus: bool) -> Result<Vec<DirentView<'_>>, DirentError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rec = buf.get(at..).unwrap_or_default();
        let (entry, rest) = if plus {
            match EntryOut::read_from_prefix(rec) {
                Ok((e, rest)) => (Some(e), rest),
                Err(_) => return Err(DirentError::Truncated { at }),
            }
        } else {
            (None, rec)
        };
        let (dirent, rest) =
            Dirent::read_from_prefix(rest).map_err(|_| DirentError::Truncated { at })?;
        let namelen = dirent.namelen as usize;
        if namelen == 0 || namelen > FUSE_NAME_MAX {
            return Err(DirentError::BadName { at });
        }
        let header_len = rec.len() - rest.len();
        let reclen = rec_align(header_len + namelen);
        if reclen > rec.len() {
            return Err(DirentError::Truncated { at });
        }
        let name = rest.get(..namelen).ok_or(DirentError::Truncated { at })?;
        if name.contains(&b'/') {
            return Err(DirentError::BadName { at });
        }
        out.push(DirentView {
            entry,
            dirent,
            name,
        });
        at += reclen;
    }
    Ok(out)
}
