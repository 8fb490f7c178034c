//! Requests as the kernel writes them to /dev/fuse, replies as it reads them back, and
//! one-line descriptions of both for error messages.
//!
//! fuse-wire decodes requests and encodes replies (the server's direction); the kernel
//! model needs the opposite, so the small builder lives here.

use std::fmt::Write as _;

use fuse_wire::iomap::*;
use fuse_wire::structs::{InHeader, IomapBeginOut, IomapIo};
use fuse_wire::Opcode;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One request: opcode, target node and argument bytes (everything after the in-header).
#[derive(Debug, Clone)]
pub struct Request {
    pub opcode: Opcode,
    pub nodeid: u64,
    pub body: Vec<u8>,
    /// Human-readable arguments, for error messages.
    pub args: String,
}

impl Request {
    pub fn new(opcode: Opcode, nodeid: u64) -> Request {
        Request {
            opcode,
            nodeid,
            body: Vec::new(),
            args: String::new(),
        }
    }

    /// Appends a fixed argument struct.
    pub fn arg<T: IntoBytes + Immutable + std::fmt::Debug>(mut self, value: &T) -> Request {
        self.body.extend_from_slice(value.as_bytes());
        self.sep();
        let _ = write!(self.args, "{value:?}");
        self
    }

    /// Appends a NUL-terminated name, as the kernel does for LOOKUP, CREATE, ...
    pub fn name(mut self, name: &[u8]) -> Request {
        self.body.extend_from_slice(name);
        self.body.push(0);
        self.sep();
        let _ = write!(self.args, "{:?}", String::from_utf8_lossy(name));
        self
    }

    /// Appends raw bytes (a WRITE's data), described by their length.
    pub fn data(mut self, bytes: &[u8]) -> Request {
        self.body.extend_from_slice(bytes);
        self.sep();
        let _ = write!(self.args, "{} data bytes", bytes.len());
        self
    }

    /// Replaces the argument description (for requests whose Debug output is unreadable).
    pub fn describe(mut self, text: String) -> Request {
        self.args = text;
        self
    }

    fn sep(&mut self) {
        if !self.args.is_empty() {
            self.args.push_str(", ");
        }
    }

    /// The bytes the kernel would write, with header fields as the kernel fills them.
    pub fn encode(&self, unique: u64) -> Vec<u8> {
        let header = InHeader {
            len: 0, // set by encode_request
            opcode: self.opcode as u32,
            unique,
            nodeid: self.nodeid,
            uid: 0,
            gid: 0,
            pid: std::process::id(),
            total_extlen: 0,
            padding: 0,
        };
        fuse_wire::encode_request(&header, &[&self.body])
    }

    /// "IOMAP_BEGIN(nodeid 12, ...)" for error messages.
    pub fn summary(&self) -> String {
        format!("{:?}(nodeid {}, {})", self.opcode, self.nodeid, self.args)
    }
}

/// A reply as received: the error (0 or a negative errno) and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub error: i32,
    pub payload: Vec<u8>,
    /// Position of this message in everything the server sent on the connection (replies
    /// and notifications, counted from 1): the order the server sent them in.
    pub seq: u64,
}

impl Reply {
    /// A short description: `error -22` or `N bytes: <hex prefix>`.
    pub fn summary(&self) -> String {
        if self.error != 0 {
            return format!("error {}", crate::error::errno_name(-self.error));
        }
        let shown: String = self
            .payload
            .iter()
            .take(64)
            .map(|b| format!("{b:02x}"))
            .collect();
        let more = if self.payload.len() > 64 { "…" } else { "" };
        format!("{} bytes: {shown}{more}", self.payload.len())
    }
}

/// Reads `T` from a payload that must be exactly its size (the kernel's fixed-size
/// out-args); `None` on any other length.
pub fn exact<T: FromBytes + KnownLayout + Immutable>(payload: &[u8]) -> Option<T> {
    T::read_from_bytes(payload).ok()
}

/// "WRITE|DIRECT" for opflags.
pub fn opflags_str(opflags: u32) -> String {
    const NAMES: &[(u32, &str)] = &[
        (FUSE_IOMAP_OP_WRITE, "WRITE"),
        (FUSE_IOMAP_OP_ZERO, "ZERO"),
        (FUSE_IOMAP_OP_REPORT, "REPORT"),
        (FUSE_IOMAP_OP_FAULT, "FAULT"),
        (FUSE_IOMAP_OP_DIRECT, "DIRECT"),
        (FUSE_IOMAP_OP_NOWAIT, "NOWAIT"),
        (FUSE_IOMAP_OP_OVERWRITE_ONLY, "OVERWRITE_ONLY"),
        (FUSE_IOMAP_OP_UNSHARE, "UNSHARE"),
        (FUSE_IOMAP_OP_DAX, "DAX"),
        (FUSE_IOMAP_OP_ATOMIC, "ATOMIC"),
        (FUSE_IOMAP_OP_DONTCACHE, "DONTCACHE"),
        (FUSE_IOMAP_OP_SWAPFILE, "SWAPFILE"),
        (FUSE_IOMAP_OP_WRITEBACK, "WRITEBACK"),
    ];
    bits_str(
        opflags as u64,
        NAMES.iter().map(|&(v, n)| (v as u64, n)),
        "0",
    )
}

/// "UNWRITTEN|DIRECT" for ioend flags.
pub fn ioend_flags_str(flags: u32) -> String {
    const NAMES: &[(u32, &str)] = &[
        (FUSE_IOMAP_IOEND_SHARED, "SHARED"),
        (FUSE_IOMAP_IOEND_UNWRITTEN, "UNWRITTEN"),
        (FUSE_IOMAP_IOEND_BOUNDARY, "BOUNDARY"),
        (FUSE_IOMAP_IOEND_DIRECT, "DIRECT"),
        (FUSE_IOMAP_IOEND_APPEND, "APPEND"),
        (FUSE_IOMAP_IOEND_WRITEBACK, "WRITEBACK"),
        (FUSE_IOMAP_IOEND_SWAPOFF, "SWAPOFF"),
    ];
    bits_str(flags as u64, NAMES.iter().map(|&(v, n)| (v as u64, n)), "0")
}

/// "NEW|DIRTY" for mapping flags.
pub fn map_flags_str(flags: u16) -> String {
    const NAMES: &[(u16, &str)] = &[
        (FUSE_IOMAP_F_NEW, "NEW"),
        (FUSE_IOMAP_F_DIRTY, "DIRTY"),
        (FUSE_IOMAP_F_SHARED, "SHARED"),
        (FUSE_IOMAP_F_MERGED, "MERGED"),
        (FUSE_IOMAP_F_BOUNDARY, "BOUNDARY"),
        (FUSE_IOMAP_F_ANON_WRITE, "ANON_WRITE"),
        (FUSE_IOMAP_F_ATOMIC_BIO, "ATOMIC_BIO"),
        (FUSE_IOMAP_F_WANT_IOMAP_END, "WANT_IOMAP_END"),
        (FUSE_IOMAP_F_SIZE_CHANGED, "SIZE_CHANGED"),
        (FUSE_IOMAP_F_STALE, "STALE"),
    ];
    bits_str(flags as u64, NAMES.iter().map(|&(v, n)| (v as u64, n)), "0")
}

fn bits_str(value: u64, names: impl Iterator<Item = (u64, &'static str)>, zero: &str) -> String {
    let mut out = Vec::new();
    let mut left = value;
    for (bit, name) in names {
        if value & bit != 0 {
            out.push(name.to_string());
            left &= !bit;
        }
    }
    if left != 0 {
        out.push(format!("{left:#x}"));
    }
    if out.is_empty() {
        zero.to_string()
    } else {
        out.join("|")
    }
}

/// Name of a mapping type.
pub fn type_str(type_: u16) -> String {
    match type_ {
        FUSE_IOMAP_TYPE_HOLE => "HOLE".into(),
        FUSE_IOMAP_TYPE_DELALLOC => "DELALLOC".into(),
        FUSE_IOMAP_TYPE_MAPPED => "MAPPED".into(),
        FUSE_IOMAP_TYPE_UNWRITTEN => "UNWRITTEN".into(),
        FUSE_IOMAP_TYPE_INLINE => "INLINE".into(),
        FUSE_IOMAP_TYPE_NOCACHE => "NOCACHE".into(),
        FUSE_IOMAP_TYPE_RETRY_CACHE => "RETRY_CACHE".into(),
        FUSE_IOMAP_TYPE_PURE_OVERWRITE => "PURE_OVERWRITE".into(),
        other => format!("type {other}"),
    }
}

/// "MAPPED [4096, +8192) addr 0x10000 dev 1 flags NEW|DIRTY".
pub fn io_str(io: &IomapIo) -> String {
    let addr = if io.addr == FUSE_IOMAP_NULL_ADDR {
        "NULL".to_string()
    } else {
        format!("{:#x}", io.addr)
    };
    format!(
        "{} [{}, +{}) addr {} dev {} flags {}",
        type_str(io.type_),
        io.offset,
        io.length,
        addr,
        io.dev,
        map_flags_str(io.flags)
    )
}

/// Both slots of a BEGIN reply.
pub fn begin_out_str(out: &IomapBeginOut) -> String {
    format!("read: {}; write: {}", io_str(&out.read), io_str(&out.write))
}
