//! The FUSE wire protocol: classic FUSE up to 7.45 plus the iomap extension (v7 series).
//!
//! No I/O and no filesystem logic, only bytes ⇄ types:
//! - [`consts`]: versions, init/setattr/open/... flags, ioctl numbers (uapi names);
//! - [`iomap`]: every number the iomap series adds, including [`iomap::IOMAP_MINOR`];
//! - [`opcode`]: [`Opcode`] and notification codes;
//! - [`structs`]: every wire struct, `#[repr(C)]` zerocopy types named after the uapi;
//! - [`request`]: [`parse`] a `/dev/fuse` read into a [`Request`] (never panics);
//! - [`reply`]: encode replies, notifications and directory listings (and decode them, for
//!   a kernel model);
//! - [`validate`]: the kernel's checks of iomap replies (protocol doc §7.1, §7.10).
//!
//! Facts come from `include/uapi/linux/fuse.h` (6.12 copy, 7.41; later additions marked) and
//! `docs/fuse-iomap-protocol.md`. All structs are host-endian. `zerocopy` is re-exported so
//! dependents use the same version for `read_from_prefix`/`as_bytes`.
//!
//! ```
//! use fuse_wire::{parse, reply_ok, InHeader, Op, Opcode, EntryOut, OpenOut};
//! use fuse_wire::zerocopy::IntoBytes;
//!
//! let h = InHeader { opcode: Opcode::Lookup as u32, unique: 7, nodeid: 1, ..Default::default() };
//! let buf = fuse_wire::encode_request(&h, &[b"hello\0"]);
//! let req = parse(&buf).unwrap();
//! assert_eq!(req.op, Op::Lookup { name: b"hello" });
//! // A CREATE reply is an entry followed by an open reply.
//! let reply = reply_ok(req.unique(), &[EntryOut::default().as_bytes(), OpenOut::default().as_bytes()]);
//! assert_eq!(reply.len(), 16 + 128 + 16);
//! ```

pub mod consts;
pub mod iomap;
pub mod opcode;
pub mod reply;
pub mod request;
pub mod structs;
pub mod validate;

pub use zerocopy;

pub use opcode::{NotifyCode, Opcode, UnknownOpcode};
pub use reply::{
    notify, notify_parts, parse_dirents, parse_reply, reply_err, reply_ok, reply_struct, DirentBuf,
    ReplyBuf,
};
pub use request::{
    encode_request, parse, parse_header, parse_with, DecodeError, Layout, NameError, Op, Request,
};
pub use structs::*;
pub use validate::{validate_begin_reply, validate_begin_reply_with, MappingError, ValidateCtx};

/// The few Linux errno values this crate itself produces.
pub mod errno {
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Function not implemented (the answer to an unknown opcode).
    pub const ENOSYS: i32 = 38;
    /// Structure needs cleaning; the kernel's `EFSCORRUPTED`.
    pub const EUCLEAN: i32 = 117;
}
