//! Request decoding: one `/dev/fuse` read in, a typed [`Request`] out.
//!
//! The buffer is untrusted: every length is checked, nothing is indexed unchecked, and no
//! allocation is sized by a count before the count is proven to fit in the buffer. Fixed
//! arguments must have exactly the size the kernel sends (the protocol has had those sizes
//! since long before [`crate::consts::MIN_SUPPORTED_MINOR`]); INIT alone also accepts the
//! 16-byte pre-7.36 form. Unknown opcodes are not an error: they decode to [`Op::Unknown`].

use zerocopy::FromBytes;

use crate::errno::{EINVAL, EIO};
use crate::opcode::Opcode;
use crate::structs::*;

/// A decoded request; names and data borrow from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The request header as received.
    pub header: InHeader,
    /// The operation and its arguments.
    pub op: Op<'a>,
    /// Raw request extensions (`total_extlen` × 8 bytes at the end; security context,
    /// supplementary groups), empty unless the server negotiated them.
    pub extensions: &'a [u8],
}

impl Request<'_> {
    /// The opcode, if known.
    pub fn opcode(&self) -> Option<Opcode> {
        Opcode::from_u32(self.header.opcode)
    }

    /// The request id to answer with.
    pub fn unique(&self) -> u64 {
        self.header.unique
    }

    /// The inode the request is about.
    pub fn nodeid(&self) -> u64 {
        self.header.nodeid
    }
}

/// One variant per opcode with its decoded arguments. Names exclude the trailing NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    /// FUSE_LOOKUP.
    Lookup { name: &'a [u8] },
    /// FUSE_FORGET (no reply).
    Forget(ForgetIn),
    /// FUSE_GETATTR.
    Getattr(GetattrIn),
    /// FUSE_SETATTR.
    Setattr(SetattrIn),
    /// FUSE_READLINK.
    Readlink,
    /// FUSE_SYMLINK: create `name` in the node, pointing at `target`.
    Symlink { name: &'a [u8], target: &'a [u8] },
    /// FUSE_MKNOD.
    Mknod { arg: MknodIn, name: &'a [u8] },
    /// FUSE_MKDIR.
    Mkdir { arg: MkdirIn, name: &'a [u8] },
    /// FUSE_UNLINK.
    Unlink { name: &'a [u8] },
    /// FUSE_RMDIR.
    Rmdir { name: &'a [u8] },
    /// FUSE_RENAME (flags 0) and FUSE_RENAME2 (`RENAME_*` flags).
    Rename {
        newdir: u64,
        flags: u32,
        oldname: &'a [u8],
        newname: &'a [u8],
    },
    /// FUSE_LINK: link `arg.oldnodeid` as `name` in the node.
    Link { arg: LinkIn, name: &'a [u8] },
    /// FUSE_OPEN.
    Open(OpenIn),
    /// FUSE_READ.
    Read(ReadIn),
    /// FUSE_WRITE; `data.len() == arg.size`.
    Write { arg: WriteIn, data: &'a [u8] },
    /// FUSE_STATFS.
    Statfs,
    /// FUSE_RELEASE.
    Release(ReleaseIn),
    /// FUSE_FSYNC.
    Fsync(FsyncIn),
    /// FUSE_SETXATTR; `value.len() == arg.size`. `setxattr_flags` (`FUSE_SETXATTR_ACL_*`)
    /// come only in the 16-byte form ([`Layout::setxattr_ext`]); 0 otherwise.
    Setxattr {
        arg: SetxattrIn,
        setxattr_flags: u32,
        name: &'a [u8],
        value: &'a [u8],
    },
    /// FUSE_GETXATTR.
    Getxattr { arg: GetxattrIn, name: &'a [u8] },
    /// FUSE_LISTXATTR.
    Listxattr(GetxattrIn),
    /// FUSE_REMOVEXATTR.
    Removexattr { name: &'a [u8] },
    /// FUSE_FLUSH.
    Flush(FlushIn),
    /// FUSE_INIT (a 16-byte legacy argument is zero-extended).
    Init(InitIn),
    /// FUSE_OPENDIR.
    Opendir(OpenIn),
    /// FUSE_READDIR.
    Readdir(ReadIn),
    /// FUSE_RELEASEDIR.
    Releasedir(ReleaseIn),
    /// FUSE_FSYNCDIR.
    Fsyncdir(FsyncIn),
    /// FUSE_GETLK.
    Getlk(LkIn),
    /// FUSE_SETLK.
    Setlk(LkIn),
    /// FUSE_SETLKW.
    Setlkw(LkIn),
    /// FUSE_ACCESS.
    Access(AccessIn),
    /// FUSE_CREATE.
    Create { arg: CreateIn, name: &'a [u8] },
    /// FUSE_INTERRUPT.
    Interrupt(InterruptIn),
    /// FUSE_BMAP.
    Bmap(BmapIn),
    /// FUSE_DESTROY.
    Destroy,
    /// FUSE_IOCTL; `data.len() == arg.in_size`.
    Ioctl { arg: IoctlIn, data: &'a [u8] },
    /// FUSE_POLL.
    Poll(PollIn),
    /// FUSE_NOTIFY_REPLY (answer to a retrieve); `data.len() == arg.size`.
    NotifyReply {
        arg: NotifyRetrieveIn,
        data: &'a [u8],
    },
    /// FUSE_BATCH_FORGET (no reply).
    BatchForget { forgets: Vec<ForgetOne> },
    /// FUSE_FALLOCATE.
    Fallocate(FallocateIn),
    /// FUSE_READDIRPLUS.
    Readdirplus(ReadIn),
    /// FUSE_LSEEK.
    Lseek(LseekIn),
    /// FUSE_COPY_FILE_RANGE (reply `WriteOut`).
    CopyFileRange(CopyFileRangeIn),
    /// FUSE_SETUPMAPPING (DAX).
    SetupMapping(SetupmappingIn),
    /// FUSE_REMOVEMAPPING (DAX).
    RemoveMapping { mappings: Vec<RemovemappingOne> },
    /// FUSE_SYNCFS.
    Syncfs(SyncfsIn),
    /// FUSE_TMPFILE; the kernel sends the VFS placeholder name "/", so `name` is not
    /// checked as an entry name.
    Tmpfile { arg: CreateIn, name: &'a [u8] },
    /// FUSE_STATX.
    Statx(StatxIn),
    /// FUSE_COPY_FILE_RANGE_64 (reply `CopyFileRangeOut`).
    CopyFileRange64(CopyFileRangeIn),
    /// FUSE_FREEZE_FS.
    FreezeFs(FreezefsIn),
    /// FUSE_UNFREEZE_FS.
    UnfreezeFs,
    /// FUSE_SHUTDOWN_FS.
    ShutdownFs(ShutdownfsIn),
    /// FUSE_IOMAP_CONFIG.
    IomapConfig(IomapConfigIn),
    /// FUSE_IOMAP_IOEND.
    IomapIoend(IomapIoendIn),
    /// FUSE_IOMAP_BEGIN.
    IomapBegin(IomapBeginIn),
    /// FUSE_IOMAP_END.
    IomapEnd(IomapEndIn),
    /// CUSE_INIT.
    CuseInit(CuseInitIn),
    /// An opcode this crate does not know; answer ENOSYS.
    Unknown(u32),
}

impl Op<'_> {
    /// False for FORGET and BATCH_FORGET, which must not be answered.
    pub fn needs_reply(&self) -> bool {
        !matches!(self, Op::Forget(_) | Op::BatchForget { .. })
    }
}

/// What is wrong with a name in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No terminating NUL.
    #[error("not NUL-terminated")]
    Unterminated,
    /// Zero-length name.
    #[error("empty")]
    Empty,
    /// A directory entry name containing '/'.
    #[error("contains '/'")]
    Slash,
    /// Bytes after the last expected NUL (e.g. an embedded NUL).
    #[error("unexpected bytes after the terminating NUL")]
    TrailingBytes,
}

/// Why a request could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a request header.
    #[error("request of {len} bytes is shorter than the {IN_HEADER_LEN}-byte header")]
    TruncatedHeader { len: usize },
    /// `header.len` differs from the bytes read.
    #[error("request {unique}: header length {header_len} but {buf_len} bytes were read")]
    LengthMismatch {
        unique: u64,
        header_len: u32,
        buf_len: usize,
    },
    /// `total_extlen` points before the end of the header.
    #[error("request {unique} (opcode {opcode}): {ext_len} bytes of extensions exceed the {body_len}-byte body")]
    ExtensionsTooLong {
        unique: u64,
        opcode: u32,
        ext_len: usize,
        body_len: usize,
    },
    /// A fixed-size argument of the wrong size.
    #[error("request {unique} (opcode {opcode}): argument is {got} bytes, expected {expected}")]
    ArgSize {
        unique: u64,
        opcode: u32,
        expected: usize,
        got: usize,
    },
    /// Too few bytes for the fixed part of a variable-size argument.
    #[error(
        "request {unique} (opcode {opcode}): argument is {got} bytes, expected at least {min}"
    )]
    ArgTooShort {
        unique: u64,
        opcode: u32,
        min: usize,
        got: usize,
    },
    /// A malformed name.
    #[error("request {unique} (opcode {opcode}): bad name: {reason}")]
    BadName {
        unique: u64,
        opcode: u32,
        reason: NameError,
    },
    /// A declared length that does not match the bytes that follow.
    #[error(
        "request {unique} (opcode {opcode}): {what} declares {declared} bytes but {got} follow"
    )]
    DataLength {
        unique: u64,
        opcode: u32,
        what: &'static str,
        declared: u64,
        got: usize,
    },
}

impl DecodeError {
    /// The request id, when the header was readable.
    pub fn unique(&self) -> Option<u64> {
        match *self {
            DecodeError::TruncatedHeader { .. } => None,
            DecodeError::LengthMismatch { unique, .. }
            | DecodeError::ExtensionsTooLong { unique, .. }
            | DecodeError::ArgSize { unique, .. }
            | DecodeError::ArgTooShort { unique, .. }
            | DecodeError::BadName { unique, .. }
            | DecodeError::DataLength { unique, .. } => Some(unique),
        }
    }

    /// The errno to answer with: EIO for a broken header, EINVAL for malformed arguments.
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::TruncatedHeader { .. }
            | DecodeError::LengthMismatch { .. }
            | DecodeError::ExtensionsTooLong { .. } => EIO,
            _ => EINVAL,
        }
    }
}

/// Read and check the header: at least 40 bytes, and `len` equal to the buffer length.
pub fn parse_header(buf: &[u8]) -> Result<InHeader, DecodeError> {
    let (header, _) = InHeader::read_from_prefix(buf)
        .map_err(|_| DecodeError::TruncatedHeader { len: buf.len() })?;
    if header.len as usize != buf.len() {
        return Err(DecodeError::LengthMismatch {
            unique: header.unique,
            header_len: header.len,
            buf_len: buf.len(),
        });
    }
    Ok(header)
}

/// What INIT negotiated that changes the layout of later requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// `FUSE_SETXATTR_EXT`: SETXATTR carries the 16-byte `fuse_setxattr_in`.
    pub setxattr_ext: bool,
}

/// Decode one request (exactly one `/dev/fuse` read) in the layout of a session that
/// negotiated nothing that changes it.
pub fn parse(buf: &[u8]) -> Result<Request<'_>, DecodeError> {
    parse_with(buf, Layout::default())
}

/// Decode one request in the layout the session negotiated.
pub fn parse_with(buf: &[u8], layout: Layout) -> Result<Request<'_>, DecodeError> {
    let header = parse_header(buf)?;
    let body = buf.get(IN_HEADER_LEN..).unwrap_or_default();
    let ext_len = usize::from(header.total_extlen) * 8;
    let Some(args_len) = body.len().checked_sub(ext_len) else {
        return Err(DecodeError::ExtensionsTooLong {
            unique: header.unique,
            opcode: header.opcode,
            ext_len,
            body_len: body.len(),
        });
    };
    let (args, extensions) = body.split_at(args_len);
    let op = decode_op(&header, args, layout)?;
    Ok(Request {
        header,
        op,
        extensions,
    })
}

/// How a name is checked.
#[derive(Clone, Copy)]
enum NameKind {
    /// Directory entry: non-empty, no '/'.
    Entry,
    /// xattr name or symlink target: non-empty.
    NonEmpty,
    /// Anything NUL-terminated (TMPFILE's placeholder).
    Any,
}

/// A cursor over the argument bytes of one request.
struct Args<'a> {
    rest: &'a [u8],
    unique: u64,
    opcode: u32,
}

impl<'a> Args<'a> {
    /// Take a fixed struct from the front.
    fn take<T: FromBytes>(&mut self) -> Result<T, DecodeError> {
        match T::read_from_prefix(self.rest) {
            Ok((v, rest)) => {
                self.rest = rest;
                Ok(v)
            }
            Err(_) => Err(DecodeError::ArgTooShort {
                unique: self.unique,
                opcode: self.opcode,
                min: core::mem::size_of::<T>(),
                got: self.rest.len(),
            }),
        }
    }

    /// The whole argument is exactly one `T`.
    fn only<T: FromBytes>(mut self) -> Result<T, DecodeError> {
        let expected = core::mem::size_of::<T>();
        if self.rest.len() != expected {
            return Err(self.size_error(expected));
        }
        self.take()
    }

    /// The request has no argument.
    fn none(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.size_error(0))
        }
    }

    fn size_error(&self, expected: usize) -> DecodeError {
        DecodeError::ArgSize {
            unique: self.unique,
            opcode: self.opcode,
            expected,
            got: self.rest.len(),
        }
    }

    fn name_error(&self, reason: NameError) -> DecodeError {
        DecodeError::BadName {
            unique: self.unique,
            opcode: self.opcode,
            reason,
        }
    }

    /// Take a NUL-terminated name, returned without the NUL.
    fn name(&mut self, kind: NameKind) -> Result<&'a [u8], DecodeError> {
        let nul = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.name_error(NameError::Unterminated))?;
        let (name, rest) = self.rest.split_at(nul);
        match kind {
            NameKind::Entry | NameKind::NonEmpty if name.is_empty() => {
                return Err(self.name_error(NameError::Empty))
            }
            NameKind::Entry if name.contains(&b'/') => {
                return Err(self.name_error(NameError::Slash))
            }
            _ => {}
        }
        self.rest = rest.get(1..).unwrap_or_default();
        Ok(name)
    }

    /// Take a name that must end the argument.
    fn last_name(mut self, kind: NameKind) -> Result<&'a [u8], DecodeError> {
        let name = self.name(kind)?;
        if self.rest.is_empty() {
            Ok(name)
        } else {
            Err(self.name_error(NameError::TrailingBytes))
        }
    }

    /// The remaining bytes, which must be exactly `declared` long.
    fn data(self, declared: u64, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() as u64 == declared {
            Ok(self.rest)
        } else {
            Err(DecodeError::DataLength {
                unique: self.unique,
                opcode: self.opcode,
                what,
                declared,
                got: self.rest.len(),
            })
        }
    }

    /// The remaining bytes as exactly `count` records of `T`.
    fn records<T: FromBytes>(self, count: u32, what: &'static str) -> Result<Vec<T>, DecodeError> {
        let size = core::mem::size_of::<T>();
        let declared = u64::from(count) * size as u64;
        // Checked against the buffer before anything is allocated.
        let bytes = self.data(declared, what)?;
        Ok(bytes
            .chunks_exact(size)
            .filter_map(|c| T::read_from_bytes(c).ok())
            .collect())
    }
}

fn decode_op<'a>(header: &InHeader, args: &'a [u8], layout: Layout) -> Result<Op<'a>, DecodeError> {
    let Some(opcode) = Opcode::from_u32(header.opcode) else {
        return Ok(Op::Unknown(header.opcode));
    };
    let mut a = Args {
        rest: args,
        unique: header.unique,
        opcode: header.opcode,
    };
    use NameKind::*;
    Ok(match opcode {
        Opcode::Lookup => Op::Lookup {
            name: a.last_name(Entry)?,
        },
        Opcode::Forget => Op::Forget(a.only()?),
        Opcode::Getattr => Op::Getattr(a.only()?),
        Opcode::Setattr => Op::Setattr(a.only()?),
        Opcode::Readlink => a.none().map(|()| Op::Readlink)?,
        Opcode::Symlink => {
            let name = a.name(Entry)?;
            Op::Symlink {
                name,
                target: a.last_name(NonEmpty)?,
            }
        }
        Opcode::Mknod => Op::Mknod {
            arg: a.take()?,
            name: a.last_name(Entry)?,
        },
        Opcode::Mkdir => Op::Mkdir {
            arg: a.take()?,
            name: a.last_name(Entry)?,
        },
        Opcode::Unlink => Op::Unlink {
            name: a.last_name(Entry)?,
        },
        Opcode::Rmdir => Op::Rmdir {
            name: a.last_name(Entry)?,
        },
        Opcode::Rename => {
            let arg: RenameIn = a.take()?;
            let oldname = a.name(Entry)?;
            Op::Rename {
                newdir: arg.newdir,
                flags: 0,
                oldname,
                newname: a.last_name(Entry)?,
            }
        }
        Opcode::Rename2 => {
            let arg: Rename2In = a.take()?;
            let oldname = a.name(Entry)?;
            Op::Rename {
                newdir: arg.newdir,
                flags: arg.flags,
                oldname,
                newname: a.last_name(Entry)?,
            }
        }
        Opcode::Link => Op::Link {
            arg: a.take()?,
            name: a.last_name(Entry)?,
        },
        Opcode::Open => Op::Open(a.only()?),
        Opcode::Read => Op::Read(a.only()?),
        Opcode::Write => {
            let arg: WriteIn = a.take()?;
            Op::Write {
                arg,
                data: a.data(u64::from(arg.size), "write size")?,
            }
        }
        Opcode::Statfs => a.none().map(|()| Op::Statfs)?,
        Opcode::Release => Op::Release(a.only()?),
        Opcode::Fsync => Op::Fsync(a.only()?),
        Opcode::Setxattr => {
            let arg: SetxattrIn = a.take()?;
            let setxattr_flags = match layout.setxattr_ext {
                true => a.take::<SetxattrInExt>()?.setxattr_flags,
                false => 0,
            };
            let name = a.name(NonEmpty)?;
            Op::Setxattr {
                arg,
                setxattr_flags,
                name,
                value: a.data(u64::from(arg.size), "xattr value size")?,
            }
        }
        Opcode::Getxattr => Op::Getxattr {
            arg: a.take()?,
            name: a.last_name(NonEmpty)?,
        },
        Opcode::Listxattr => Op::Listxattr(a.only()?),
        Opcode::Removexattr => Op::Removexattr {
            name: a.last_name(NonEmpty)?,
        },
        Opcode::Flush => Op::Flush(a.only()?),
        Opcode::Init => Op::Init(decode_init(a)?),
        Opcode::Opendir => Op::Opendir(a.only()?),
        Opcode::Readdir => Op::Readdir(a.only()?),
        Opcode::Releasedir => Op::Releasedir(a.only()?),
        Opcode::Fsyncdir => Op::Fsyncdir(a.only()?),
        Opcode::Getlk => Op::Getlk(a.only()?),
        Opcode::Setlk => Op::Setlk(a.only()?),
        Opcode::Setlkw => Op::Setlkw(a.only()?),
        Opcode::Access => Op::Access(a.only()?),
        Opcode::Create => Op::Create {
            arg: a.take()?,
            name: a.last_name(Entry)?,
        },
        Opcode::Interrupt => Op::Interrupt(a.only()?),
        Opcode::Bmap => Op::Bmap(a.only()?),
        Opcode::Destroy => a.none().map(|()| Op::Destroy)?,
        Opcode::Ioctl => {
            let arg: IoctlIn = a.take()?;
            Op::Ioctl {
                arg,
                data: a.data(u64::from(arg.in_size), "ioctl in_size")?,
            }
        }
        Opcode::Poll => Op::Poll(a.only()?),
        Opcode::NotifyReply => {
            let arg: NotifyRetrieveIn = a.take()?;
            Op::NotifyReply {
                arg,
                data: a.data(u64::from(arg.size), "retrieve size")?,
            }
        }
        Opcode::BatchForget => {
            let arg: BatchForgetIn = a.take()?;
            Op::BatchForget {
                forgets: a.records(arg.count, "batch forget count")?,
            }
        }
        Opcode::Fallocate => Op::Fallocate(a.only()?),
        Opcode::Readdirplus => Op::Readdirplus(a.only()?),
        Opcode::Lseek => Op::Lseek(a.only()?),
        Opcode::CopyFileRange => Op::CopyFileRange(a.only()?),
        Opcode::SetupMapping => Op::SetupMapping(a.only()?),
        Opcode::RemoveMapping => {
            let arg: RemovemappingIn = a.take()?;
            Op::RemoveMapping {
                mappings: a.records(arg.count, "removemapping count")?,
            }
        }
        Opcode::Syncfs => Op::Syncfs(a.only()?),
        Opcode::Tmpfile => Op::Tmpfile {
            arg: a.take()?,
            name: a.last_name(Any)?,
        },
        Opcode::Statx => Op::Statx(a.only()?),
        Opcode::CopyFileRange64 => Op::CopyFileRange64(a.only()?),
        Opcode::FreezeFs => Op::FreezeFs(a.only()?),
        Opcode::UnfreezeFs => a.none().map(|()| Op::UnfreezeFs)?,
        Opcode::ShutdownFs => Op::ShutdownFs(a.only()?),
        Opcode::IomapConfig => Op::IomapConfig(a.only()?),
        Opcode::IomapIoend => Op::IomapIoend(a.only()?),
        Opcode::IomapBegin => Op::IomapBegin(a.only()?),
        Opcode::IomapEnd => Op::IomapEnd(a.only()?),
        Opcode::CuseInit => Op::CuseInit(a.only()?),
    })
}

/// INIT: the 64-byte form (7.36+), or the 16-byte legacy form zero-extended. Longer
/// arguments are accepted (a newer kernel may grow the struct; the reply negotiates down).
fn decode_init(mut a: Args<'_>) -> Result<InitIn, DecodeError> {
    if a.rest.len() >= core::mem::size_of::<InitIn>() {
        return a.take();
    }
    let legacy: InitInLegacy = a.take()?;
    Ok(InitIn {
        major: legacy.major,
        minor: legacy.minor,
        max_readahead: legacy.max_readahead,
        flags: legacy.flags,
        ..InitIn::default()
    })
}

/// Encode a request the way the kernel would (for tests and the kernel model): `header.len`
/// is set to the total length; all other header fields are taken as given.
pub fn encode_request(header: &InHeader, parts: &[&[u8]]) -> Vec<u8> {
    use zerocopy::IntoBytes;
    let total = IN_HEADER_LEN + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut h = *header;
    h.len = u32::try_from(total).unwrap_or(u32::MAX);
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(h.as_bytes());
    for p in parts {
        buf.extend_from_slice(p);
    }
    buf
}
