//! Typed replies and their encoding: the operations answer with a [`Reply`] (or an
//! [`Errno`]); only this module turns one into the bytes the kernel reads.

use std::io::{self, IoSlice};

use fuse_wire::reply::{out_header, wire_error, DirentBuf};
use fuse_wire::structs::{
    AttrOut, EntryOut, GetxattrOut, InitOut, IoctlOut, IomapBeginOut, IomapConfigOut,
    IomapIoendOut, LseekOut, OpenOut, OutHeader, StatfsOut, StatxOut, WriteOut,
    IOMAP_CONFIG_OUT_SHORT_LEN, OUT_HEADER_LEN,
};
use zerocopy::{Immutable, IntoBytes};

use crate::errno::Errno;
use crate::transport::Transport;

/// What a request is answered with when it succeeds.
#[derive(Debug)]
pub enum Reply {
    /// No payload (UNLINK, FLUSH, FSYNC, ...).
    Empty,
    Init(InitOut),
    Entry(EntryOut),
    Attr(AttrOut),
    Open(OpenOut),
    /// CREATE and TMPFILE: the new entry and its open file.
    Create(EntryOut, OpenOut),
    /// File bytes (READ) or a link target (READLINK).
    Data(Vec<u8>),
    Write(WriteOut),
    Dirents(DirentBuf),
    Statfs(StatfsOut),
    Statx(StatxOut),
    Xattr(Xattr),
    Lseek(LseekOut),
    /// FS_IOC_GETVERSION: the `long` the restricted ioctl returns.
    IoctlU64(u64),
    /// Sent up to and including `s_maxbytes`: we use no mapping cache.
    IomapConfig(IomapConfigOut),
    IomapBegin(IomapBeginOut),
    IomapIoend(IomapIoendOut),
}

/// GETXATTR and LISTXATTR: the size when asked with size 0, else the bytes.
#[derive(Debug)]
pub enum Xattr {
    Size(GetxattrOut),
    Value(Vec<u8>),
}

/// FS_IOC_GETVERSION's reply: `fuse_ioctl_out`, then the value right after it.
#[derive(IntoBytes, Immutable)]
#[repr(C)]
struct IoctlU64Out {
    out: IoctlOut,
    value: u64,
}

impl Reply {
    /// Calls `f` with the payload as parts of one message.
    fn with_payload<R>(&self, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        fn one<T: IntoBytes + Immutable, R>(v: &T, f: impl FnOnce(&[&[u8]]) -> R) -> R {
            f(&[v.as_bytes()])
        }
        match self {
            Reply::Empty => f(&[]),
            Reply::Init(out) => one(out, f),
            Reply::Entry(out) => one(out, f),
            Reply::Attr(out) => one(out, f),
            Reply::Open(out) => one(out, f),
            Reply::Create(entry, open) => f(&[entry.as_bytes(), open.as_bytes()]),
            Reply::Data(bytes) => f(&[bytes]),
            Reply::Write(out) => one(out, f),
            Reply::Dirents(buf) => f(&[buf.as_bytes()]),
            Reply::Statfs(out) => one(out, f),
            Reply::Statx(out) => one(out, f),
            Reply::Xattr(Xattr::Size(out)) => one(out, f),
            Reply::Xattr(Xattr::Value(bytes)) => f(&[bytes]),
            Reply::Lseek(out) => one(out, f),
            Reply::IoctlU64(value) => one(
                &IoctlU64Out {
                    out: IoctlOut::default(),
                    value: *value,
                },
                f,
            ),
            Reply::IomapConfig(out) => f(&[&out.as_bytes()[..IOMAP_CONFIG_OUT_SHORT_LEN]]),
            Reply::IomapBegin(out) => one(out, f),
            Reply::IomapIoend(out) => one(out, f),
        }
    }
}

/// Sends the answer to request `unique`: the reply's payload, or the error alone.
pub fn send(
    transport: &dyn Transport,
    unique: u64,
    reply: &Result<Reply, Errno>,
) -> io::Result<()> {
    match reply {
        Ok(reply) => reply.with_payload(|parts| send_message(transport, unique, 0, parts)),
        Err(Errno(e)) => send_message(transport, unique, wire_error(*e), &[]),
    }
}

/// Sends a READ reply whose parts may point into the device mapping. When a device page
/// fails to read, the kernel's copy fails: it then answers the request EIO itself and
/// returns EFAULT here, which ends nothing else.
pub fn send_mapped(transport: &dyn Transport, unique: u64, parts: &[&[u8]]) -> io::Result<()> {
    match send_message(transport, unique, 0, parts) {
        Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
            tracing::warn!(
                unique,
                "a READ reply could not be copied from the device: {e}"
            );
            Ok(())
        }
        other => other,
    }
}

/// Sends a notification (unique 0, the code in the error field).
pub fn send_notification(transport: &dyn Transport, code: i32, payload: &[u8]) -> io::Result<()> {
    send_message(transport, 0, code, &[payload])
}

/// Writes one message: an out header (length, error or notify code, unique) and the
/// payload parts. A payload too long for the length field goes out as EIO.
fn send_message(
    transport: &dyn Transport,
    unique: u64,
    error: i32,
    parts: &[&[u8]],
) -> io::Result<()> {
    let len = parts.iter().map(|p| p.len()).sum();
    let Some(header) = out_header(unique, error, len) else {
        let header = OutHeader {
            len: OUT_HEADER_LEN as u32,
            error: wire_error(libc::EIO),
            unique,
        };
        return transport.send(&[IoSlice::new(header.as_bytes())]);
    };
    let mut slices = Vec::with_capacity(1 + parts.len());
    slices.push(IoSlice::new(header.as_bytes()));
    slices.extend(parts.iter().map(|p| IoSlice::new(p)));
    transport.send(&slices)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use fuse_wire::reply::parse_reply;

    use super::*;

    /// Keeps every message sent, as one byte vector each.
    #[derive(Default)]
    struct Capture(Mutex<Vec<Vec<u8>>>);

    impl Transport for Capture {
        fn receive(&self, _: &mut [u8]) -> io::Result<Option<usize>> {
            Ok(None)
        }
        fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
            let msg = parts.iter().flat_map(|p| p.iter().copied()).collect();
            self.0.lock().unwrap().push(msg);
            Ok(())
        }
        fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
            Ok(Arc::new(Capture::default()))
        }
        fn backing_open(&self, _: std::os::fd::RawFd) -> io::Result<u32> {
            Ok(1)
        }
    }

    fn encode(reply: Result<Reply, Errno>) -> Vec<u8> {
        let t = Capture::default();
        send(&t, 7, &reply).unwrap();
        t.0.into_inner().unwrap().pop().unwrap()
    }

    #[test]
    fn typed_replies_encode_as_the_kernel_reads_them() {
        let entry = EntryOut {
            nodeid: 5,
            ..Default::default()
        };
        let open = OpenOut {
            fh: 9,
            ..Default::default()
        };
        let msg = encode(Ok(Reply::Create(entry, open)));
        let view = parse_reply(&msg).unwrap();
        assert_eq!((view.header.unique, view.header.error), (7, 0));
        assert_eq!(view.payload, [entry.as_bytes(), open.as_bytes()].concat());

        let msg = encode(Ok(Reply::IoctlU64(0x1122)));
        let payload = parse_reply(&msg).unwrap().payload.to_vec();
        let ioctl_len = std::mem::size_of::<IoctlOut>();
        assert_eq!(payload.len(), ioctl_len + 8);
        assert_eq!(payload[ioctl_len..], 0x1122u64.to_ne_bytes());

        let msg = encode(Ok(Reply::IomapConfig(IomapConfigOut::default())));
        assert_eq!(
            parse_reply(&msg).unwrap().payload.len(),
            IOMAP_CONFIG_OUT_SHORT_LEN
        );

        let msg = encode(Ok(Reply::Empty));
        assert_eq!(msg.len(), OUT_HEADER_LEN);
    }

    #[test]
    fn errors_are_a_header_with_the_negated_errno() {
        let msg = encode(Err(Errno(libc::ENOENT)));
        let view = parse_reply(&msg).unwrap();
        assert_eq!(view.header.error, -libc::ENOENT);
        assert!(view.payload.is_empty());
        // Out of the kernel's range: EIO, never a reply the kernel rejects.
        let msg = encode(Err(Errno(4096)));
        assert_eq!(parse_reply(&msg).unwrap().header.error, -libc::EIO);
    }
}
