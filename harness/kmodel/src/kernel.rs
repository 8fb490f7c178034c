//! The kernel side of one FUSE connection: INIT, IOMAP_CONFIG, the inode table, namespace
//! operations, sync, freeze and unmount — what fs/fuse does around the iomap data paths
//! (those live in `crate::iomap`).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fuse_wire::consts::*;
use fuse_wire::iomap::*;
use fuse_wire::structs::*;
use fuse_wire::validate::validate_config_reply;
use fuse_wire::Opcode;
use zerocopy::FromBytes;

use crate::cache::DirtyBlocks;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::session::{ServerSpec, Session, SharedSession};
use crate::wire::{exact, Reply, Request};

/// A FUSE node id.
pub type NodeId = u64;

/// `O_RDWR`, `O_CREAT`, `O_EXCL` (asm-generic values; this crate has no libc).
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_EXCL: u32 = 0o200;
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const ENOSYS: i32 = 38;
const ENOENT: i32 = 2;

/// Init flags a 6.x kernel with the iomap series offers (a representative set), plus
/// FUSE_IOMAP. Security contexts and supplementary groups are left out: they would add
/// request extensions the model does not build.
pub const OFFERED_INIT_FLAGS: u64 = FUSE_ASYNC_READ
    | FUSE_POSIX_LOCKS
    | FUSE_ATOMIC_O_TRUNC
    | FUSE_EXPORT_SUPPORT
    | FUSE_BIG_WRITES
    | FUSE_DONT_MASK
    | FUSE_FLOCK_LOCKS
    | FUSE_HAS_IOCTL_DIR
    | FUSE_AUTO_INVAL_DATA
    | FUSE_DO_READDIRPLUS
    | FUSE_READDIRPLUS_AUTO
    | FUSE_ASYNC_DIO
    | FUSE_WRITEBACK_CACHE
    | FUSE_NO_OPEN_SUPPORT
    | FUSE_PARALLEL_DIROPS
    | FUSE_HANDLE_KILLPRIV
    | FUSE_POSIX_ACL
    | FUSE_ABORT_ERROR
    | FUSE_MAX_PAGES
    | FUSE_CACHE_SYMLINKS
    | FUSE_NO_OPENDIR_SUPPORT
    | FUSE_EXPLICIT_INVAL_DATA
    | FUSE_HANDLE_KILLPRIV_V2
    | FUSE_INIT_EXT
    | FUSE_HAS_EXPIRE_ONLY
    | FUSE_DIRECT_IO_ALLOW_MMAP
    | FUSE_NO_EXPORT_SUPPORT
    | FUSE_HAS_RESEND
    | FUSE_IOMAP;

/// The kernel's in-core view of one inode.
#[derive(Debug, Clone)]
pub struct Inode {
    pub nodeid: NodeId,
    /// `fuse_attr.ino` at instantiation (`fi->orig_ino`): every iomap request carries it.
    pub attr_ino: u64,
    /// The attributes last received.
    pub attr: Attr,
    pub is_reg: bool,
    /// In-core size (the kernel trusts its own for iomap inodes).
    pub i_size: u64,
    /// The size the kernel believes the server persisted (`fi->i_disk_size`).
    pub i_disk_size: u64,
    /// Lookup references to give back with FORGET.
    pub nlookup: u64,
    /// Open file handle, if opened.
    pub fh: Option<u64>,
    /// FOPEN_* flags of that open.
    pub open_flags: u32,
    /// Dirty page cache.
    pub dirty: DirtyBlocks,
    /// Seconds the last entry reply let the kernel trust the name and attributes.
    pub entry_valid: u64,
}

/// What IOMAP_CONFIG told the superblock.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub blocksize: u32,
    pub maxbytes: u64,
    /// The raw reply, when the server sent one (not ENOSYS).
    pub config: Option<IomapConfigOut>,
    /// The backing device id the server's mappings must use (the first id a kernel hands out).
    pub dev: u32,
    /// Size of the backing device (the image), bytes.
    pub dev_size: u64,
}

/// Connection-wide state from INIT and from ENOSYS answers.
#[derive(Debug, Clone, Default)]
pub struct ConnState {
    pub minor: u32,
    pub flags: u64,
    /// Both sides agreed on FUSE iomap; otherwise the connection is classic FUSE, where the
    /// model only does namespace operations.
    pub iomap: bool,
    pub max_write: u32,
    pub no_end: bool,
    pub no_ioend: bool,
    pub no_fsync: bool,
    pub no_syncfs: bool,
    /// The server has no FLUSH (answered ENOSYS once): close sends only RELEASE.
    pub no_flush: bool,
}

/// What the model's INIT offers: a protocol minor and the init flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitOffer {
    pub minor: u32,
    pub flags: u64,
}

impl InitOffer {
    /// A kernel with the FUSE iomap series (the default).
    pub const IOMAP: InitOffer = InitOffer {
        minor: IOMAP_MINOR,
        flags: OFFERED_INIT_FLAGS,
    };

    /// Mainline Linux 7.3 with fuse io_uring enabled (CONFIG_FUSE_IO_URING,
    /// `fuse.enable_uring=1`): minor 46, and INIT bit 43 set as FUSE_HAS_IO_URING_BUFPOOL,
    /// the bit the iomap series calls FUSE_IOMAP (protocol doc §2).
    pub const MAINLINE_7_3_URING: InitOffer = InitOffer {
        minor: IO_URING_BUFPOOL_MINOR,
        flags: (OFFERED_INIT_FLAGS & !FUSE_IOMAP) | FUSE_OVER_IO_URING | FUSE_HAS_IO_URING_BUFPOOL,
    };
}

/// How requests reach the server.
pub(crate) enum Link {
    /// This kernel alone, one request at a time.
    Own(Session),
    /// One of several kernel threads on one connection (`Kernel::mount_shared`).
    Shared(Arc<SharedSession>),
}

/// The device model's lock; a panicked thread must not hide the others' findings.
pub(crate) fn lock(device: &Mutex<Device>) -> MutexGuard<'_, Device> {
    device.lock().unwrap_or_else(|p| p.into_inner())
}

/// One mounted session: the server connection plus the kernel's state.
pub struct Kernel {
    pub(crate) link: Link,
    /// The backing block device (the image file), opened read-write like a bdev.
    pub(crate) disk: File,
    /// The device model (DEV_INVAL, page-cache hazard), shared by all threads of a mount.
    pub(crate) device: Arc<Mutex<Device>>,
    pub sb: Superblock,
    pub conn: ConnState,
    pub(crate) inodes: HashMap<NodeId, Inode>,
    /// Dentries: (parent, name) → node.
    names: HashMap<(NodeId, Vec<u8>), NodeId>,
}

fn open_disk(spec: &ServerSpec) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&spec.image)
        .map_err(|e| Error::io(format!("open {}", spec.image.display()), e))
}

fn disk_size(disk: &File) -> Result<u64> {
    Ok(disk
        .metadata()
        .map_err(|e| Error::io("stat the image", e))?
        .len())
}

fn root_inode() -> Inode {
    Inode {
        nodeid: FUSE_ROOT_ID,
        attr_ino: 0,
        attr: Attr::default(),
        is_reg: false,
        i_size: 0,
        i_disk_size: 0,
        nlookup: 0,
        fh: None,
        open_flags: 0,
        dirty: DirtyBlocks::default(),
        entry_valid: 0,
    }
}

impl Kernel {
    /// Starts the server on `spec.image` and mounts it: INIT offering FUSE_IOMAP, then
    /// IOMAP_CONFIG, checked as the kernel checks them.
    pub fn mount(spec: &ServerSpec, reply_timeout: Duration) -> Result<Kernel> {
        Kernel::mount_offering(spec, reply_timeout, InitOffer::IOMAP)
    }

    /// Like [`Kernel::mount`], with INIT offering `offer` (e.g. a mainline kernel's).
    pub fn mount_offering(
        spec: &ServerSpec,
        reply_timeout: Duration,
        offer: InitOffer,
    ) -> Result<Kernel> {
        let disk = open_disk(spec)?;
        let session = Session::spawn(spec, reply_timeout)?;
        Kernel::over_offering(session, disk, offer)
    }

    /// Mounts over an existing connection (a server the caller started or fakes).
    pub fn over(session: Session, disk: File) -> Result<Kernel> {
        Kernel::over_offering(session, disk, InitOffer::IOMAP)
    }

    /// Like [`Kernel::over`], with INIT offering `offer`.
    pub fn over_offering(session: Session, disk: File, offer: InitOffer) -> Result<Kernel> {
        let device = Arc::new(Mutex::new(Device::new(1, disk_size(&disk)?, 4096)));
        Kernel::start(Link::Own(session), disk, device, offer)
    }

    /// Mounts for several kernel threads at once (the concurrent mode): the connection is
    /// shared, [`Kernel::handle`] makes a kernel for each further thread.
    pub fn mount_shared(spec: &ServerSpec, reply_timeout: Duration) -> Result<Kernel> {
        let disk = open_disk(spec)?;
        let device = Arc::new(Mutex::new(Device::new(1, disk_size(&disk)?, 4096)));
        let on_reader = device.clone();
        let session = Session::spawn(spec, reply_timeout)?.share(Box::new(move |n| {
            lock(&on_reader).notification_on_reader(&n)
        }))?;
        Kernel::start(Link::Shared(session), disk, device, InitOffer::IOMAP)
    }

    /// INIT, IOMAP_CONFIG (iomap only) and the root inode.
    fn start(
        link: Link,
        disk: File,
        device: Arc<Mutex<Device>>,
        offer: InitOffer,
    ) -> Result<Kernel> {
        let dev_size = lock(&device).size;
        let mut k = Kernel {
            link,
            disk,
            device,
            sb: Superblock {
                blocksize: 4096,
                maxbytes: MAX_LFS_FILESIZE as u64,
                config: None,
                dev: 1,
                dev_size,
            },
            conn: ConnState::default(),
            inodes: HashMap::new(),
            names: HashMap::new(),
        };
        k.init(offer)?;
        if k.conn.iomap {
            k.iomap_config()?;
        }
        {
            let mut device = lock(&k.device);
            device.dev = k.sb.dev;
            device.block_size = k.sb.blocksize as u64;
        }
        // The root inode exists from the start (fuse_fill_super makes it without a LOOKUP).
        k.inodes.insert(FUSE_ROOT_ID, root_inode());
        Ok(k)
    }

    /// Another kernel thread on this mount (shared mounts only): the same connection,
    /// device and superblock, its own inodes (the root only, at first) and page cache.
    /// Threads must work on disjoint files, as the model keeps no shared inode table.
    pub fn handle(&self) -> Result<Kernel> {
        let Link::Shared(shared) = &self.link else {
            return Err(Error::Unsupported(
                "handles need a shared mount (Kernel::mount_shared)".into(),
            ));
        };
        let mut inodes = HashMap::new();
        inodes.insert(FUSE_ROOT_ID, root_inode());
        Ok(Kernel {
            link: Link::Shared(shared.clone()),
            disk: self
                .disk
                .try_clone()
                .map_err(|e| Error::io("clone the device fd", e))?,
            device: self.device.clone(),
            sb: self.sb.clone(),
            conn: self.conn.clone(),
            inodes,
            names: HashMap::new(),
        })
    }

    // ---- requests ------------------------------------------------------------------------

    /// Sends a request, waits for the reply and checks notifications that came with it.
    pub(crate) fn call(&mut self, req: &Request) -> Result<Reply> {
        let reply = match &mut self.link {
            Link::Own(session) => session.call(req)?,
            Link::Shared(shared) => shared.call(req)?,
        };
        self.check_notifications(req)?;
        Ok(reply)
    }

    /// Sends a request that gets no reply (FORGET).
    fn send_only(&mut self, req: &Request) -> Result<()> {
        match &mut self.link {
            Link::Own(session) => session.send_only(req),
            Link::Shared(shared) => shared.send_only(req),
        }
    }

    /// A request whose error reply is a failure; returns the payload.
    pub(crate) fn call_ok(&mut self, req: &Request) -> Result<Vec<u8>> {
        let reply = self.call(req)?;
        if reply.error != 0 {
            return Err(Error::Errno {
                request: req.summary(),
                errno: -reply.error,
            });
        }
        Ok(reply.payload)
    }

    /// A request with a fixed-size reply struct (the kernel rejects any other length).
    pub(crate) fn call_struct<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
        &mut self,
        req: &Request,
    ) -> Result<T> {
        let payload = self.call_ok(req)?;
        exact::<T>(&payload).ok_or_else(|| Error::Violation {
            rule: format!(
                "reply must be exactly {} bytes (fixed-size out-arg)",
                std::mem::size_of::<T>()
            ),
            request: req.summary(),
            reply: format!("{} bytes", payload.len()),
        })
    }

    /// A request whose reply carries no payload.
    pub(crate) fn call_empty(&mut self, req: &Request) -> Result<()> {
        let payload = self.call_ok(req)?;
        if !payload.is_empty() {
            return Err(Error::Violation {
                rule: "reply must carry no payload".into(),
                request: req.summary(),
                reply: format!("{} bytes", payload.len()),
            });
        }
        Ok(())
    }

    /// A request whose reply carries no payload, where ENOSYS means the server lacks the
    /// operation (the kernel then stops sending it): whether it answered ENOSYS. `name`
    /// names the opcode in a violation.
    fn call_empty_unless_enosys(&mut self, req: &Request, name: &str) -> Result<bool> {
        let reply = self.call(req)?;
        match -reply.error {
            0 if reply.payload.is_empty() => Ok(false),
            ENOSYS => Ok(true),
            0 => Err(Error::Violation {
                rule: format!("{name} reply carries no payload"),
                request: req.summary(),
                reply: reply.summary(),
            }),
            e => Err(Error::Errno {
                request: req.summary(),
                errno: e,
            }),
        }
    }

    /// Validates notifications the way fuse_notify() would; a rejected one is a server bug.
    /// On a shared connection the reader thread did that already; its findings come here.
    fn check_notifications(&mut self, req: &Request) -> Result<()> {
        match &mut self.link {
            Link::Own(session) => {
                for n in std::mem::take(&mut session.notifications) {
                    let context = format!(
                        "(notification {} arrived while waiting for {})",
                        n.code,
                        req.summary()
                    );
                    lock(&self.device).notification(&n, &context)?;
                }
            }
            Link::Shared(shared) => {
                if let Some(e) = shared.take_trouble() {
                    return Err(e);
                }
            }
        }
        match lock(&self.device).take_failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Notifications the server sent so far, by code.
    pub fn notification_counts(&self) -> HashMap<i32, u64> {
        lock(&self.device).counts.clone()
    }

    /// Every file data write so far, `(device offset, length)` in bytes.
    pub fn data_writes(&self) -> Vec<(u64, u64)> {
        lock(&self.device).written.clone()
    }

    /// Every DEV_INVAL range `(offset, length)` so far, in bytes, in arrival order.
    pub fn invalidated(&self) -> Vec<(u64, u64)> {
        lock(&self.device).invalidated.clone()
    }

    /// `node` is about to do something that may free its blocks: from now on their
    /// invalidation is expected, not late.
    pub(crate) fn may_free(&self, node: NodeId) {
        lock(&self.device).forget_node(node);
    }

    // ---- INIT and IOMAP_CONFIG -----------------------------------------------------------

    fn init(&mut self, offer: InitOffer) -> Result<()> {
        let mut arg = InitIn {
            major: KERNEL_VERSION,
            minor: offer.minor,
            max_readahead: 128 << 10,
            ..Default::default()
        };
        let (lo, hi) = split_init_flags(offer.flags);
        arg.flags = lo;
        arg.flags2 = hi;
        let req = Request::new(Opcode::Init, 0).arg(&arg);
        let payload = self.call_ok(&req)?;
        // INIT's out-arg is variable: 24 bytes (7.22) up to the full 64.
        if payload.len() < FUSE_COMPAT_22_INIT_OUT_SIZE
            || payload.len() > std::mem::size_of::<InitOut>()
        {
            return Err(Error::Violation {
                rule: "INIT reply must be 24..=64 bytes".into(),
                request: req.summary(),
                reply: format!("{} bytes", payload.len()),
            });
        }
        let mut buf = [0u8; std::mem::size_of::<InitOut>()];
        buf[..payload.len()].copy_from_slice(&payload);
        let out = InitOut::read_from_bytes(&buf).expect("buffer has the struct's size");
        let describe = format!("{out:?}");
        if out.major != KERNEL_VERSION {
            return Err(Error::Violation {
                rule: "INIT: major must be 7".into(),
                request: req.summary(),
                reply: describe,
            });
        }
        let flags = if out.flags as u64 & FUSE_INIT_EXT != 0 {
            out.flags64()
        } else {
            out.flags as u64
        };
        let server_iomap = flags & FUSE_IOMAP != 0;
        let offered = offers_iomap(offer.minor, offer.flags);
        if server_iomap && !offered {
            let rule = if offer.flags & FUSE_IOMAP != 0 {
                format!(
                    "§2: the server took INIT bit 43 for FUSE_IOMAP from a kernel speaking 7.{}, below the iomap minor 7.{IOMAP_MINOR}: there the bit means {}, the kernel does no iomap, and a server in iomap mode stops moving file data",
                    offer.minor,
                    init_bit43_meaning(offer.minor)
                )
            } else {
                "§2: the server replied FUSE_IOMAP, which the kernel did not offer".into()
            };
            return Err(Error::Violation {
                rule,
                request: req.summary(),
                reply: describe,
            });
        }
        if offered && !server_iomap {
            return Err(Error::Unsupported(format!(
                "the server did not accept FUSE_IOMAP (flags2 bit 11 with FUSE_INIT_EXT): {describe}"
            )));
        }
        if server_iomap && out.minor < IOMAP_MINOR {
            return Err(Error::Violation {
                rule: format!(
                    "§2: iomap accepted with minor {} < {IOMAP_MINOR}: the kernel honours FUSE_ATTR_EXCLUSIVE only at ≥ {IOMAP_MINOR}, so no inode would use iomap",
                    out.minor
                ),
                request: req.summary(),
                reply: describe,
            });
        }
        self.conn.minor = out.minor;
        self.conn.flags = flags;
        self.conn.iomap = server_iomap;
        self.conn.max_write = out.max_write;
        Ok(())
    }

    fn iomap_config(&mut self) -> Result<()> {
        let arg = IomapConfigIn {
            flags: FUSE_IOMAP_CONFIG_ALL,
            maxbytes: MAX_LFS_FILESIZE,
            cache_maxbytes: FUSE_IOMAP_CACHE_DEFAULT_MAXBYTES,
            ..Default::default()
        };
        let req = Request::new(Opcode::IomapConfig, 0).arg(&arg);
        let reply = self.call(&req)?;
        match reply.error {
            0 => {}
            e if -e == ENOSYS => return Ok(()), // "no config": accepted
            e => {
                return Err(Error::Errno {
                    request: req.summary(),
                    errno: -e,
                })
            }
        }
        let Some(out) = IomapConfigOut::from_reply(&reply.payload) else {
            return Err(Error::Violation {
                rule: "§1.1: IOMAP_CONFIG reply longer than fuse_iomap_config_out (104 bytes)"
                    .into(),
                request: req.summary(),
                reply: reply.summary(),
            });
        };
        // Post-v7 checks included: the model is as strict as the strictest kernel.
        validate_config_reply(&out, true).map_err(|e| Error::Violation {
            rule: format!("§7.10: {e} (the mount fails with EINVAL)"),
            request: req.summary(),
            reply: format!("{out:?}"),
        })?;
        if out.flags & FUSE_IOMAP_CONFIG_BLOCKSIZE != 0 {
            self.sb.blocksize = out.s_blocksize;
        }
        if out.flags & FUSE_IOMAP_CONFIG_MAXBYTES != 0 {
            self.sb.maxbytes = out.s_maxbytes as u64;
        }
        self.sb.config = Some(out);
        Ok(())
    }

    // ---- inodes ---------------------------------------------------------------------------

    pub fn inode(&self, node: NodeId) -> Result<&Inode> {
        self.inodes
            .get(&node)
            .ok_or_else(|| Error::Unsupported(format!("node {node} is not in the inode table")))
    }

    pub(crate) fn inode_mut(&mut self, node: NodeId) -> Result<&mut Inode> {
        self.inodes
            .get_mut(&node)
            .ok_or_else(|| Error::Unsupported(format!("node {node} is not in the inode table")))
    }

    /// The block size the kernel uses for this mount.
    pub fn block_size(&self) -> u64 {
        self.sb.blocksize as u64
    }

    /// Requests sent so far, by opcode name.
    pub fn request_counts(&self) -> std::collections::BTreeMap<String, u64> {
        match &self.link {
            Link::Own(session) => session.counts.clone(),
            Link::Shared(shared) => shared.counts(),
        }
    }

    /// Takes a reference on the inode an entry reply names, creating it on first sight
    /// (fuse_iget): that is when its attr flags decide whether it uses iomap (§6).
    fn instantiate(&mut self, req: &Request, entry: &EntryOut) -> Result<NodeId> {
        let attr = entry.attr;
        if entry.nodeid == 0 {
            return Err(Error::Errno {
                request: req.summary(),
                errno: ENOENT,
            });
        }
        let is_reg = attr.mode & S_IFMT == S_IFREG;
        if let Some(inode) = self.inodes.get_mut(&entry.nodeid) {
            inode.nlookup += 1;
            inode.attr = attr;
            inode.entry_valid = entry.entry_valid.min(entry.attr_valid);
            inode.i_disk_size = attr.size; // fuse_iomap_set_disk_size on every attr change
            return Ok(entry.nodeid);
        }
        if is_reg && !self.conn.iomap && attr.flags & FUSE_ATTR_IOMAP != 0 {
            return Err(Error::Violation {
                rule: "§2, §6: FUSE_ATTR_IOMAP on a connection that did not negotiate iomap: the kernel ignores it and sends FUSE_READ/FUSE_WRITE, while the server believes the kernel moves the file data".into(),
                request: req.summary(),
                reply: format!("{entry:?}"),
            });
        }
        if is_reg
            && self.conn.iomap
            && attr.flags & (FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE)
                != (FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE)
        {
            return Err(Error::Violation {
                rule: "§6: a regular file's attr must carry FUSE_ATTR_IOMAP|FUSE_ATTR_EXCLUSIVE when the kernel instantiates it, or the kernel does not use iomap for it".into(),
                request: req.summary(),
                reply: format!("{entry:?}"),
            });
        }
        self.inodes.insert(
            entry.nodeid,
            Inode {
                nodeid: entry.nodeid,
                attr_ino: attr.ino,
                attr,
                is_reg,
                i_size: attr.size,
                i_disk_size: attr.size,
                nlookup: 1,
                fh: None,
                open_flags: 0,
                dirty: DirtyBlocks::default(),
                entry_valid: entry.entry_valid.min(entry.attr_valid),
            },
        );
        Ok(entry.nodeid)
    }

    fn entry_reply(&mut self, req: &Request) -> Result<EntryOut> {
        self.call_struct::<EntryOut>(req)
    }

    /// LOOKUP `name` in `parent`.
    pub fn lookup(&mut self, parent: NodeId, name: &str) -> Result<NodeId> {
        let req = Request::new(Opcode::Lookup, parent).name(name.as_bytes());
        let entry = self.entry_reply(&req)?;
        let node = self.instantiate(&req, &entry)?;
        self.names.insert((parent, name.as_bytes().to_vec()), node);
        Ok(node)
    }

    /// Looks up a '/'-separated path below the root.
    pub fn lookup_path(&mut self, path: &str) -> Result<NodeId> {
        let mut node = FUSE_ROOT_ID;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = match self.names.get(&(node, part.as_bytes().to_vec())) {
                Some(&n) => n,
                None => self.lookup(node, part)?,
            };
        }
        Ok(node)
    }

    /// CREATE a regular file (O_RDWR|O_CREAT|O_EXCL); the file stays open.
    pub fn create(&mut self, parent: NodeId, name: &str, mode: u32) -> Result<NodeId> {
        let arg = CreateIn {
            flags: O_RDWR | O_CREAT | O_EXCL,
            mode: S_IFREG | (mode & 0o7777),
            umask: 0o022,
            open_flags: 0,
        };
        let req = Request::new(Opcode::Create, parent)
            .arg(&arg)
            .name(name.as_bytes());
        let payload = self.call_ok(&req)?;
        const LEN: usize = std::mem::size_of::<EntryOut>() + std::mem::size_of::<OpenOut>();
        if payload.len() != LEN {
            return Err(Error::Violation {
                rule: format!("CREATE reply must be exactly {LEN} bytes (entry + open)"),
                request: req.summary(),
                reply: format!("{} bytes", payload.len()),
            });
        }
        let (entry, rest) = EntryOut::read_from_prefix(&payload).expect("length checked");
        let open = OpenOut::read_from_bytes(rest).expect("length checked");
        let node = self.instantiate(&req, &entry)?;
        self.names.insert((parent, name.as_bytes().to_vec()), node);
        self.opened(&req, node, open)?;
        Ok(node)
    }

    /// MKDIR.
    pub fn mkdir(&mut self, parent: NodeId, name: &str, mode: u32) -> Result<NodeId> {
        let req = Request::new(Opcode::Mkdir, parent)
            .arg(&MkdirIn {
                mode: mode & 0o7777,
                umask: 0o022,
            })
            .name(name.as_bytes());
        let entry = self.entry_reply(&req)?;
        let node = self.instantiate(&req, &entry)?;
        self.names.insert((parent, name.as_bytes().to_vec()), node);
        Ok(node)
    }

    /// UNLINK; the inode (if the kernel holds it) is closed, its dirty pages discarded and
    /// forgotten, as eviction of an unlinked inode does.
    pub fn unlink(&mut self, parent: NodeId, name: &str) -> Result<()> {
        if let Some(&node) = self.names.get(&(parent, name.as_bytes().to_vec())) {
            self.may_free(node);
        }
        let req = Request::new(Opcode::Unlink, parent).name(name.as_bytes());
        self.call_empty(&req)?;
        if let Some(node) = self.names.remove(&(parent, name.as_bytes().to_vec())) {
            if let Some(inode) = self.inodes.get_mut(&node) {
                inode.dirty.clear();
            }
            self.release(node)?;
            self.forget(node)?;
        }
        Ok(())
    }

    /// RENAME2 `parent/name` to `newparent/newname` with `RENAME_*` flags. The kernel's
    /// dentries follow (an exchange swaps them; a replaced target is dropped).
    pub fn rename(
        &mut self,
        parent: NodeId,
        name: &str,
        newparent: NodeId,
        newname: &str,
        flags: u32,
    ) -> Result<()> {
        let req = Request::new(Opcode::Rename2, parent)
            .arg(&Rename2In {
                newdir: newparent,
                flags,
                padding: 0,
            })
            .name(name.as_bytes())
            .name(newname.as_bytes());
        self.call_empty(&req)?;
        let old = self.names.remove(&(parent, name.as_bytes().to_vec()));
        let new = self.names.remove(&(newparent, newname.as_bytes().to_vec()));
        if let Some(node) = old {
            self.names
                .insert((newparent, newname.as_bytes().to_vec()), node);
        }
        if let (Some(node), true) = (new, flags & RENAME_EXCHANGE != 0) {
            self.names.insert((parent, name.as_bytes().to_vec()), node);
        }
        Ok(())
    }

    /// LINK: a new name `newparent/newname` for `node`.
    pub fn link(&mut self, node: NodeId, newparent: NodeId, newname: &str) -> Result<NodeId> {
        let req = Request::new(Opcode::Link, newparent)
            .arg(&LinkIn { oldnodeid: node })
            .name(newname.as_bytes());
        let entry = self.entry_reply(&req)?;
        let node = self.instantiate(&req, &entry)?;
        self.names
            .insert((newparent, newname.as_bytes().to_vec()), node);
        Ok(node)
    }

    /// RMDIR.
    pub fn rmdir(&mut self, parent: NodeId, name: &str) -> Result<()> {
        let req = Request::new(Opcode::Rmdir, parent).name(name.as_bytes());
        self.call_empty(&req)?;
        if let Some(node) = self.names.remove(&(parent, name.as_bytes().to_vec())) {
            self.forget(node)?;
        }
        Ok(())
    }

    /// SYMLINK `parent/name` → `target`.
    pub fn symlink(&mut self, parent: NodeId, name: &str, target: &str) -> Result<NodeId> {
        let req = Request::new(Opcode::Symlink, parent)
            .name(name.as_bytes())
            .name(target.as_bytes());
        let entry = self.entry_reply(&req)?;
        let node = self.instantiate(&req, &entry)?;
        self.names.insert((parent, name.as_bytes().to_vec()), node);
        Ok(node)
    }

    /// Sends any request and returns the reply as it came (error or payload): for tests
    /// of requests the model has no operation for, or that a kernel would never send.
    pub fn call_raw(&mut self, req: &Request) -> Result<Reply> {
        self.call(req)
    }

    /// Hangs up without DESTROY (after the server was told to stop some other way) and
    /// waits for it to exit successfully.
    pub fn hang_up(self) -> Result<()> {
        match self.link {
            Link::Own(session) => session.finish(),
            Link::Shared(shared) => shared.finish(),
        }
    }

    /// The server's process id, when this kernel started it.
    pub fn server_pid(&self) -> Option<u32> {
        match &self.link {
            Link::Own(session) => session.server_pid(),
            Link::Shared(_) => None,
        }
    }

    /// Names in a directory (OPENDIR, READDIR until empty, RELEASEDIR), without . and ..
    pub fn readdir(&mut self, dir: NodeId) -> Result<Vec<String>> {
        let req = Request::new(Opcode::Opendir, dir).arg(&OpenIn {
            flags: 0,
            open_flags: 0,
        });
        let open: OpenOut = self.call_struct(&req)?;
        let mut names = Vec::new();
        let mut offset = 0u64;
        loop {
            let arg = ReadIn {
                fh: open.fh,
                offset,
                size: 64 << 10,
                ..Default::default()
            };
            let req = Request::new(Opcode::Readdir, dir).arg(&arg);
            let payload = self.call_ok(&req)?;
            if payload.is_empty() {
                break;
            }
            let entries =
                fuse_wire::parse_dirents(&payload, false).map_err(|e| Error::Violation {
                    rule: format!("READDIR payload: {e}"),
                    request: req.summary(),
                    reply: format!("{} bytes", payload.len()),
                })?;
            for e in &entries {
                let name = String::from_utf8_lossy(e.name).into_owned();
                if name != "." && name != ".." {
                    names.push(name);
                }
                offset = e.dirent.off;
            }
        }
        let rel = ReleaseIn {
            fh: open.fh,
            ..Default::default()
        };
        self.call_empty(&Request::new(Opcode::Releasedir, dir).arg(&rel))?;
        Ok(names)
    }

    /// Records an open's file handle after checking its flags (§6 open-time rules).
    fn opened(&mut self, req: &Request, node: NodeId, open: OpenOut) -> Result<()> {
        let forbidden = FOPEN_PASSTHROUGH | FOPEN_STREAM | FOPEN_NONSEEKABLE;
        let inode = self.inode_mut(node)?;
        if inode.is_reg && open.open_flags & forbidden != 0 {
            return Err(Error::Violation {
                rule: "§6: an iomap file's OPEN reply must not set FOPEN_PASSTHROUGH, FOPEN_STREAM or FOPEN_NONSEEKABLE (kernel: EINVAL)".into(),
                request: req.summary(),
                reply: format!("{open:?}"),
            });
        }
        if open.open_flags & FOPEN_DIRECT_IO != 0 {
            return Err(Error::Unsupported(format!(
                "FOPEN_DIRECT_IO on {node} (forces the direct path for every I/O)"
            )));
        }
        inode.fh = Some(open.fh);
        inode.open_flags = open.open_flags;
        Ok(())
    }

    /// The open file handle of `node`, opening it (O_RDWR) if needed.
    pub fn ensure_open(&mut self, node: NodeId) -> Result<u64> {
        if let Some(fh) = self.inode(node)?.fh {
            return Ok(fh);
        }
        let req = Request::new(Opcode::Open, node).arg(&OpenIn {
            flags: O_RDWR,
            open_flags: 0,
        });
        let open: OpenOut = self.call_struct(&req)?;
        self.opened(&req, node, open)?;
        Ok(open.fh)
    }

    /// Closes the file: FLUSH (sent even with FOPEN_NOFLUSH for iomap, never again once
    /// answered ENOSYS) and RELEASE.
    pub fn release(&mut self, node: NodeId) -> Result<()> {
        let Some(fh) = self.inode(node)?.fh else {
            return Ok(());
        };
        if !self.conn.no_flush {
            let flush = FlushIn {
                fh,
                ..Default::default()
            };
            let req = Request::new(Opcode::Flush, node).arg(&flush);
            self.conn.no_flush = self.call_empty_unless_enosys(&req, "FLUSH")?;
        }
        let rel = ReleaseIn {
            fh,
            flags: O_RDWR,
            ..Default::default()
        };
        self.call_empty(&Request::new(Opcode::Release, node).arg(&rel))?;
        self.inode_mut(node)?.fh = None;
        Ok(())
    }

    /// Drops the kernel's inode: FORGET with every lookup reference it holds.
    pub fn forget(&mut self, node: NodeId) -> Result<()> {
        let Some(inode) = self.inodes.remove(&node) else {
            return Ok(());
        };
        if inode.nlookup > 0 {
            self.may_free(node);
            self.send_only(&Request::new(Opcode::Forget, node).arg(&ForgetIn {
                nlookup: inode.nlookup,
            }))?;
        }
        self.names.retain(|_, n| *n != node);
        Ok(())
    }

    /// GETATTR from the server. Like the kernel, this refreshes `i_disk_size` from the
    /// reply but keeps the in-core size (iomap inodes trust their cached size).
    pub fn getattr(&mut self, node: NodeId) -> Result<Attr> {
        let fh = self.inode(node)?.fh;
        let arg = GetattrIn {
            getattr_flags: if fh.is_some() { FUSE_GETATTR_FH } else { 0 },
            dummy: 0,
            fh: fh.unwrap_or(0),
        };
        let out: AttrOut = self.call_struct(&Request::new(Opcode::Getattr, node).arg(&arg))?;
        let inode = self.inode_mut(node)?;
        inode.attr = out.attr;
        if inode.is_reg {
            inode.i_disk_size = out.attr.size;
        }
        Ok(out.attr)
    }

    /// SETATTR with a size: the upcall part of truncate (see `Kernel::truncate`).
    pub(crate) fn setattr_size(&mut self, node: NodeId, size: u64) -> Result<Attr> {
        let fh = self.ensure_open(node)?;
        self.may_free(node);
        let arg = SetattrIn {
            valid: FATTR_SIZE | FATTR_FH,
            fh,
            size,
            ..Default::default()
        };
        let out: AttrOut = self.call_struct(&Request::new(Opcode::Setattr, node).arg(&arg))?;
        Ok(out.attr)
    }

    // ---- sync, freeze, unmount ------------------------------------------------------------

    /// fsync(2): write back the file's dirty pages, then FSYNC.
    pub fn fsync(&mut self, node: NodeId) -> Result<()> {
        self.writeback(node)?;
        if self.conn.no_fsync {
            return Ok(());
        }
        let fh = self.ensure_open(node)?;
        let req = Request::new(Opcode::Fsync, node).arg(&FsyncIn {
            fh,
            fsync_flags: 0,
            padding: 0,
        });
        self.conn.no_fsync = self.call_empty_unless_enosys(&req, "FSYNC")?;
        Ok(())
    }

    /// Writes back every inode's dirty pages.
    pub fn writeback_all(&mut self) -> Result<()> {
        let mut nodes: Vec<NodeId> = self
            .inodes
            .iter()
            .filter(|(_, i)| !i.dirty.is_empty())
            .map(|(&n, _)| n)
            .collect();
        nodes.sort_unstable();
        for node in nodes {
            self.writeback(node)?;
        }
        Ok(())
    }

    /// syncfs(2): write back everything, then SYNCFS (enabled by iomap, §2).
    pub fn syncfs(&mut self) -> Result<()> {
        self.writeback_all()?;
        if self.conn.no_syncfs {
            return Ok(());
        }
        let req = Request::new(Opcode::Syncfs, FUSE_ROOT_ID).arg(&SyncfsIn { padding: 0 });
        self.conn.no_syncfs = self.call_empty_unless_enosys(&req, "SYNCFS")?;
        Ok(())
    }

    /// Freeze: sync the filesystem, then FREEZE_FS (ENOSYS means the freezer gets EOPNOTSUPP).
    pub fn freeze(&mut self) -> Result<()> {
        self.syncfs()?;
        let req = Request::new(Opcode::FreezeFs, FUSE_ROOT_ID).arg(&FreezefsIn { unlinked: 0 });
        self.call_empty(&req)
    }

    /// Thaw: UNFREEZE_FS (ENOSYS counts as success).
    pub fn unfreeze(&mut self) -> Result<()> {
        let req = Request::new(Opcode::UnfreezeFs, FUSE_ROOT_ID);
        let reply = self.call(&req)?;
        match -reply.error {
            0 | ENOSYS => Ok(()),
            e => Err(Error::Errno {
                request: req.summary(),
                errno: e,
            }),
        }
    }

    /// SHUTDOWN_FS (the kernel ignores the reply).
    pub fn shutdown_fs(&mut self) -> Result<()> {
        let req = Request::new(Opcode::ShutdownFs, FUSE_ROOT_ID).arg(&ShutdownfsIn { flags: 0 });
        self.call(&req).map(|_| ())
    }

    /// Unmount: write back, close and forget everything, DESTROY, and wait for the server
    /// to exit (it must have closed the device before replying, §7.9).
    pub fn destroy(mut self) -> Result<()> {
        self.close_all()?;
        self.call_empty(&Request::new(Opcode::Destroy, 0))?;
        self.disk
            .sync_all()
            .map_err(|e| Error::io("sync the image", e))?;
        match self.link {
            Link::Own(session) => session.finish(),
            Link::Shared(shared) => shared.finish(),
        }
    }

    /// Unmount as the kernel does it when writeback fails (a filesystem that went
    /// read-only, an I/O error): dirty pages that cannot be written are dropped, every
    /// inode is still closed and forgotten, and DESTROY is sent all the same.
    pub fn destroy_despite_errors(mut self) -> Result<()> {
        let mut nodes: Vec<NodeId> = self.inodes.keys().copied().collect();
        nodes.sort_unstable();
        for &node in &nodes {
            if self.writeback(node).is_err() {
                if let Some(inode) = self.inodes.get_mut(&node) {
                    inode.dirty.clear();
                }
            }
            let _ = self.release(node);
        }
        for node in nodes {
            if node != FUSE_ROOT_ID {
                let _ = self.forget(node);
            }
        }
        self.call_empty(&Request::new(Opcode::Destroy, 0))?;
        match self.link {
            Link::Own(session) => session.finish(),
            Link::Shared(shared) => shared.finish(),
        }
    }

    /// What unmount does for this kernel's inodes: write back, close and forget them all.
    /// (A thread of a shared mount calls this before the mount's DESTROY.)
    pub fn close_all(&mut self) -> Result<()> {
        self.writeback_all()?;
        let mut nodes: Vec<NodeId> = self.inodes.keys().copied().collect();
        nodes.sort_unstable();
        for &node in &nodes {
            self.release(node)?;
        }
        for node in nodes {
            if node != FUSE_ROOT_ID {
                self.forget(node)?;
            }
        }
        Ok(())
    }

    /// Remount: unmount (DESTROY, server exit), then a new server process on the same
    /// image and a new session.
    pub fn remount(self, spec: &ServerSpec, reply_timeout: Duration) -> Result<Kernel> {
        self.destroy()?;
        Kernel::mount(spec, reply_timeout)
    }

    // ---- the block device ------------------------------------------------------------------

    fn check_device_range(&self, addr: u64, len: u64, what: &str) -> Result<()> {
        if addr
            .checked_add(len)
            .is_none_or(|end| end > self.sb.dev_size)
        {
            return Err(Error::Violation {
                rule: format!(
                    "mapped I/O to device bytes [{addr}, +{len}) beyond the end of the device ({} bytes): the bio fails with EIO",
                    self.sb.dev_size
                ),
                request: what.to_string(),
                reply: "(the mapping in the request line)".into(),
            });
        }
        Ok(())
    }

    /// Reads device bytes (a read bio).
    pub(crate) fn disk_read(&self, addr: u64, buf: &mut [u8], what: &str) -> Result<()> {
        self.check_device_range(addr, buf.len() as u64, what)?;
        self.disk
            .read_exact_at(buf, addr)
            .map_err(|e| Error::io(format!("read device at {addr}"), e))
    }

    /// Writes file data of `node` at file offset `offset` to device bytes at `addr` (a
    /// write bio) through a mapping reply `seq` handed out; the device model notes it.
    pub(crate) fn data_bio(
        &self,
        node: NodeId,
        offset: u64,
        addr: u64,
        data: &[u8],
        seq: u64,
        what: &str,
    ) -> Result<()> {
        let len = data.len() as u64;
        self.check_device_range(addr, len, what)?;
        lock(&self.device).data_written(node, offset, addr, len, seq, what)?;
        self.disk
            .write_all_at(data, addr)
            .map_err(|e| Error::io(format!("write device at {addr}"), e))
    }
}
