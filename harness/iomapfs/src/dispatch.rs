//! Dispatch: a decoded request is routed to its operation, the typed result is encoded and
//! sent. The operations (`server/`) know nothing of wire bytes; this module knows nothing
//! of the filesystem beyond which requests change it.

use std::io;

use fuse_wire::consts::{FUSE_OPEN_KILL_SUIDGID, FUSE_WRITE_KILL_SUIDGID};
use fuse_wire::request::{Op, Request};

use crate::attr::ino_of;
use crate::errno::Errno;
use crate::reply::{self, Reply};
use crate::server::{Mode, Server};
use crate::transport::Transport;

/// Decodes and answers one request. Malformed requests are answered with an error when
/// they carry a readable `unique`, and otherwise dropped with a log line.
pub fn handle_one(server: &Server, transport: &dyn Transport, bytes: &[u8]) -> io::Result<()> {
    match fuse_wire::request::parse_with(bytes, server.wire_layout()) {
        Ok(req) => {
            // A READ reply the kernel copies may point into the device mapping; the
            // operation sends it itself, under the inode's data lock.
            let in_place = transport.copies_in_kernel().then_some(transport);
            let mut sent_in_place = None;
            let answer = handle_sending(server, &req, in_place, &mut sent_in_place);
            let sent = match (sent_in_place, answer) {
                (Some(sent), _) => sent,
                (None, Some(answer)) => {
                    let sent = reply::send(transport, req.header.unique, &answer);
                    if let Ok(Reply::Data(buf)) = answer {
                        crate::bufpool::give(buf);
                    }
                    sent
                }
                (None, None) => Ok(()),
            };
            if matches!(req.op, Op::Destroy) {
                server.mark_finished();
            }
            sent
        }
        Err(e) => {
            tracing::warn!("malformed request: {e}");
            match e.unique() {
                Some(unique) => reply::send(transport, unique, &Err(Errno(e.errno()))),
                None => Ok(()),
            }
        }
    }
}

/// Handles one request. `None` means the request gets no reply (FORGET, INTERRUPT).
///
/// A handler that panics does not leave the kernel waiting: the request gets EIO, the
/// panic is logged, and the filesystem is errored (its state may be half changed).
pub fn handle(server: &Server, req: &Request<'_>) -> Option<Result<Reply, Errno>> {
    handle_sending(server, req, None, &mut None)
}

/// `handle`; with `in_place`, a READ sends its reply there itself, records how that went
/// in `sent`, and answers `Reply::Empty`, which is not to be sent.
fn handle_sending(
    server: &Server,
    req: &Request<'_>,
    in_place: Option<&dyn Transport>,
    sent: &mut Option<io::Result<()>>,
) -> Option<Result<Reply, Errno>> {
    let run = std::panic::AssertUnwindSafe(|| route(server, req, in_place, sent));
    match std::panic::catch_unwind(run) {
        Ok(answer) => {
            if let Some(Err(Errno(libc::EUCLEAN))) = &answer {
                server.mark_errored_now(&format!("corruption found serving {:?}", req.opcode()));
            }
            answer
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!(
                unique = req.header.unique,
                "{:?} panicked: {what}",
                req.opcode()
            );
            server.mark_errored_now("a request panicked");
            (!no_reply(&req.op)).then_some(Err(Errno(libc::EIO)))
        }
    }
}

/// Requests that change the filesystem (refused after SHUTDOWN_FS).
fn modifies(op: &Op<'_>) -> bool {
    matches!(
        op,
        Op::Setattr(_)
            | Op::Symlink { .. }
            | Op::Mknod { .. }
            | Op::Mkdir { .. }
            | Op::Unlink { .. }
            | Op::Rmdir { .. }
            | Op::Rename { .. }
            | Op::Link { .. }
            | Op::Create { .. }
            | Op::Tmpfile { .. }
            | Op::Write { .. }
            | Op::Setxattr { .. }
            | Op::Removexattr { .. }
            | Op::Fallocate(_)
            | Op::IomapBegin(_)
            | Op::IomapEnd(_)
            | Op::IomapIoend(_)
    )
}

/// Requests that change the filesystem, refused (EROFS) once it is errored: like
/// `modifies`, but reads through iomap (IOMAP_BEGIN/END without a write) go on.
fn changes(op: &Op<'_>) -> bool {
    match op {
        Op::IomapBegin(arg) => fuse_wire::iomap::is_write_op(arg.opflags),
        Op::IomapEnd(arg) => fuse_wire::iomap::is_write_op(arg.opflags),
        other => modifies(other),
    }
}

/// Requests the kernel expects no reply to.
fn no_reply(op: &Op<'_>) -> bool {
    matches!(
        op,
        Op::Forget(_) | Op::BatchForget { .. } | Op::Interrupt(_)
    )
}

/// Checks the request against the server's state, then calls its operation.
fn route(
    server: &Server,
    req: &Request<'_>,
    in_place: Option<&dyn Transport>,
    sent: &mut Option<io::Result<()>>,
) -> Option<Result<Reply, Errno>> {
    let s = server;
    let nodeid = req.header.nodeid;
    // A node id names an inode we handed out; a reserved or impossible number never is
    // one (the journal, the resize inode, ...): stale, and nothing is read for it.
    let ino_of = |nodeid: u64| ino_of(nodeid).filter(|&i| s.is_valid_ino(i));
    let ino = || ino_of(nodeid).ok_or(Errno(libc::ESTALE));
    if s.debug() {
        tracing::debug!(unique = req.header.unique, nodeid, "{:?}", req.op);
    }
    if s.is_shut_down() && modifies(&req.op) {
        return Some(Err(Errno(libc::EIO)));
    }
    if s.is_errored() && changes(&req.op) {
        return Some(Err(Errno(libc::EROFS)));
    }
    if modifies(&req.op) {
        s.note_change();
    }
    let empty = |()| Reply::Empty;
    let reply = match &req.op {
        Op::Init(arg) => s.init(arg).map(Reply::Init),
        Op::Destroy => s.destroy().map(empty),
        Op::Forget(arg) => {
            s.forget(&[(nodeid, arg.nlookup)]);
            return None;
        }
        Op::BatchForget { forgets } => {
            let list: Vec<(u64, u64)> = forgets.iter().map(|f| (f.nodeid, f.nlookup)).collect();
            s.forget(&list);
            return None;
        }
        Op::Interrupt(_) => return None,
        Op::Lookup { name } => ino().and_then(|p| s.lookup(p, name)).map(Reply::Entry),
        Op::Getattr(_) => ino().and_then(|i| s.getattr(i)).map(Reply::Attr),
        Op::Setattr(arg) => ino().and_then(|i| s.setattr(i, arg)).map(Reply::Attr),
        Op::Readlink => ino().and_then(|i| s.readlink(i)).map(Reply::Data),
        Op::Symlink { name, target } => ino()
            .and_then(|p| s.symlink(req, p, name, target))
            .map(Reply::Entry),
        Op::Mknod { arg, name } => ino()
            .and_then(|p| s.mknod(req, p, name, arg.mode, arg.rdev, arg.umask))
            .map(Reply::Entry),
        Op::Mkdir { arg, name } => ino()
            .and_then(|p| s.mkdir(req, p, name, arg.mode, arg.umask))
            .map(Reply::Entry),
        Op::Unlink { name } => ino().and_then(|p| s.unlink(p, name)).map(empty),
        Op::Rmdir { name } => ino().and_then(|p| s.rmdir(p, name)).map(empty),
        Op::Rename {
            newdir,
            flags,
            oldname,
            newname,
        } => ino()
            .and_then(|p| {
                let np = ino_of(*newdir).ok_or(Errno(libc::ESTALE))?;
                s.rename(p, oldname, np, newname, *flags)
            })
            .map(empty),
        Op::Link { arg, name } => ino()
            .and_then(|p| {
                let target = ino_of(arg.oldnodeid).ok_or(Errno(libc::ESTALE))?;
                s.link(target, p, name)
            })
            .map(Reply::Entry),
        Op::Open(arg) => ino()
            .and_then(|i| {
                let kill = arg.open_flags & FUSE_OPEN_KILL_SUIDGID != 0;
                s.open(i, arg.flags, kill.then_some(req.header.gid))
            })
            .map(Reply::Open),
        Op::Create { arg, name } => ino()
            .and_then(|p| s.create(req, p, name, arg))
            .map(|(entry, open)| Reply::Create(entry, open)),
        Op::Tmpfile { arg, name: _ } => ino()
            .and_then(|p| s.tmpfile(req, p, arg))
            .map(|(entry, open)| Reply::Create(entry, open)),
        Op::Read(arg) => ino().and_then(|i| match in_place {
            Some(t) => s
                .read_then(i, arg.offset, arg.size, |parts| {
                    *sent = Some(reply::send_mapped(t, req.header.unique, parts));
                })
                .map(|()| Reply::Empty),
            None => s.read(i, arg.offset, arg.size).map(Reply::Data),
        }),
        Op::Write { arg, data } if s.mode() == Mode::Iomap => {
            // Every regular file is an iomap inode here (FUSE_ATTR_IOMAP, and no INLINE
            // mappings are handed out), so the kernel writes file data with its own bios;
            // a FUSE_WRITE means it does not treat the file as iomap (e.g. it misread
            // the INIT). Writing through our buffered fd would race its bios and its
            // truncate zeroing. EIO, not EOPNOTSUPP: the bytes did not reach the disk,
            // and write(2) callers treat EIO as lost data, EOPNOTSUPP as a missing feature.
            tracing::error!(
                nodeid,
                offset = arg.offset,
                len = data.len(),
                "FUSE_WRITE in iomap mode refused (EIO): the kernel should write iomap files itself"
            );
            Err(Errno(libc::EIO))
        }
        Op::Write { arg, data } => ino()
            .and_then(|i| {
                let direct = arg.flags & libc::O_DIRECT as u32 != 0;
                let kill = arg.write_flags & FUSE_WRITE_KILL_SUIDGID != 0;
                let out = s.write(i, arg.offset, data, direct, kill.then_some(req.header.gid))?;
                // O_DSYNC (and O_SYNC): durable before it is acknowledged, as an FSYNC on
                // the handle would make it. The kernel follows a synchronous write with
                // FSYNC, but not an asynchronous direct write (io_uring, AIO) within EOF:
                // it completes with no sync at all (fstests generic/703 lost such writes
                // to a power cut).
                if arg.flags & libc::O_DSYNC as u32 != 0 {
                    s.fsync(i, arg.fh)?;
                }
                Ok(out)
            })
            .map(Reply::Write),
        Op::Release(arg) => {
            s.release(ino().ok(), arg.fh);
            Ok(Reply::Empty)
        }
        // Like ext4, which has no flush operation: close(2) reports no write error (see
        // server/wberr.rs), and what a handle's end settles waits for RELEASE. ENOSYS makes
        // the kernel stop sending FLUSH, a round trip on every close.
        Op::Flush(_) => Err(Errno(libc::ENOSYS)),
        Op::Releasedir(_) => Ok(Reply::Empty),
        Op::Fsync(arg) => ino().and_then(|i| s.fsync(i, arg.fh)).map(empty),
        Op::Fsyncdir(_) => ino().and_then(|i| s.sync_inode(i)).map(empty),
        Op::Syncfs(_) => s.sync().map(empty),
        Op::Opendir(arg) => ino().and_then(|i| s.opendir(i, arg.flags)).map(Reply::Open),
        Op::Readdir(arg) => ino()
            .and_then(|i| s.readdir(i, arg.offset, arg.size, false))
            .map(Reply::Dirents),
        Op::Readdirplus(arg) => ino()
            .and_then(|i| s.readdir(i, arg.offset, arg.size, true))
            .map(Reply::Dirents),
        Op::Statfs => s.statfs().map(Reply::Statfs),
        Op::Setxattr {
            arg,
            setxattr_flags,
            name,
            value,
        } => ino()
            .and_then(|i| {
                let kill_sgid =
                    setxattr_flags & fuse_wire::consts::FUSE_SETXATTR_ACL_KILL_SGID != 0;
                s.setxattr(i, name, value, arg.flags, kill_sgid)
            })
            .map(empty),
        Op::Getxattr { arg, name } => ino()
            .and_then(|i| s.getxattr(i, name, arg.size))
            .map(Reply::Xattr),
        Op::Listxattr(arg) => ino()
            .and_then(|i| s.listxattr(i, arg.size))
            .map(Reply::Xattr),
        Op::Removexattr { name } => ino().and_then(|i| s.removexattr(i, name)).map(empty),
        Op::Fallocate(arg) => ino()
            .and_then(|i| {
                let caller = (req.header.uid, req.header.gid);
                s.fallocate(i, arg.offset, arg.length, arg.mode, caller)
            })
            .map(empty),
        Op::Lseek(arg) => ino()
            .and_then(|i| s.lseek(i, arg.offset, arg.whence))
            .map(Reply::Lseek),
        Op::Ioctl { arg, .. } => ino().and_then(|i| s.ioctl(i, arg)).map(Reply::IoctlU64),
        Op::Statx(_) => ino().and_then(|i| s.statx(i)).map(Reply::Statx),
        Op::IomapConfig(arg) => s.iomap_config(arg).map(Reply::IomapConfig),
        Op::IomapBegin(arg) => ino()
            .and_then(|i| s.iomap_begin(i, arg))
            .map(Reply::IomapBegin),
        Op::IomapEnd(arg) => ino().and_then(|i| s.iomap_end(i, arg)).map(empty),
        Op::IomapIoend(arg) => ino()
            .and_then(|i| s.iomap_ioend(i, arg))
            .map(Reply::IomapIoend),
        Op::FreezeFs(_) => s.freeze().map(empty),
        Op::UnfreezeFs => Ok(Reply::Empty),
        Op::ShutdownFs(_) => s.shutdown_fs().map(empty),
        _ => Err(Errno(libc::ENOSYS)),
    };
    Some(reply)
}
