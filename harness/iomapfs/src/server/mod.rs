//! The filesystem state and its operations: each operation takes decoded arguments and
//! returns a typed result (`crate::dispatch` routes requests here and encodes the replies).
//!
//! Locking: `meta` (libext2fs and the in-memory inode bookkeeping) is one mutex, held only
//! for metadata work. File data moves outside it, serialised per inode by a striped
//! read/write lock taken BEFORE `meta` (never the other way round): readers and writes of
//! whole blocks share it, other writes, truncates and fallocates take it exclusively, so
//! no I/O ever touches blocks that a concurrent truncate freed, and no two writes share a
//! block.

mod acl;
mod dir;
mod dircache;
mod file;
mod init;
mod inodes;
mod iomap;
mod node;
mod undo;
mod wberr;
mod xattr;

pub use init::{MAX_READ, MAX_WRITE};

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use ext2fs::{Fs, Ino, Inode};
use fuse_wire::structs::{AttrOut, EntryOut};
use zerocopy::IntoBytes;

use crate::attr::{ino_of, nodeid_of, to_attr};
use crate::data::DataDevice;
use crate::fault::Fault;
use crate::options::{IomapPolicy, MountOptions};
use crate::transport::Transport;

pub use crate::errno::Errno;

/// Which I/O path the kernel and the server agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Classic,
    Iomap,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Classic => "classic",
            Mode::Iomap => "iomap",
        }
    }
}

/// The metadata side: libext2fs plus what the kernel holds.
pub(crate) struct Meta {
    /// `None` once DESTROY has closed the filesystem.
    pub fs: Option<Fs>,
    /// Kernel lookup counts, of the inodes the kernel holds (an entry goes when its count
    /// drops to zero); an unlinked inode is freed then.
    pub lookups: HashMap<Ino, u64>,
    /// Inodes with no links left that are freed once the kernel forgets them.
    pub orphans: HashSet<Ino>,
    /// Name → inode indexes of large directories.
    pub dircache: dircache::DirCache,
}

impl Meta {
    pub fn fs(&mut self) -> Result<&mut Fs, Errno> {
        self.fs.as_mut().ok_or(Errno(libc::EIO))
    }

    /// The filesystem, for a change: EROFS when it is mounted read-only or errored.
    pub fn writable(&mut self) -> Result<&mut Fs, Errno> {
        let fs = self.fs()?;
        if fs.read_only() || fs.is_errored() {
            return Err(Errno(libc::EROFS));
        }
        Ok(fs)
    }

    /// `writable`, with the directory index beside it (for `DirCache::link` and friends).
    pub fn writable_indexed(&mut self) -> Result<(&mut Fs, &mut dircache::DirCache), Errno> {
        self.writable()?;
        let fs = self.fs.as_mut().ok_or(Errno(libc::EIO))?;
        Ok((fs, &mut self.dircache))
    }

    /// The inode `name` in directory `dir` names, through the directory index.
    pub fn find(&mut self, dir: Ino, name: &[u8]) -> Result<Option<Ino>, Errno> {
        let fs = self.fs.as_ref().ok_or(Errno(libc::EIO))?;
        let size = fs.read_inode(dir)?.size();
        Ok(self.dircache.lookup(fs, dir, size, name)?)
    }
}

/// The metadata lock, held. Dropping it first takes the blocks libext2fs freed under it
/// and sends FUSE_NOTIFY_IOMAP_DEV_INVAL for them, then unlocks: no other request can be
/// handed a freed block (and have the kernel write file data into it) while a stale page
/// of it may still sit in the device's page cache.
pub(crate) struct MetaGuard<'a> {
    guard: ManuallyDrop<MutexGuard<'a, Meta>>,
    server: &'a Server,
    /// Taken by a thread that answers the hand-off queue as soon as its request is done
    /// (`Server::meta_holder_drains`).
    by_drainer: bool,
}

thread_local! {
    /// Whether this thread answers the hand-off queue as soon as its current request is
    /// done (`answering_handoffs`).
    static ANSWERS_HANDOFFS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as a thread that answers the hand-off queue (`session::Handoff`) as soon as
/// it is done: a session reader handling a name operation, whose work after the metadata
/// lock is only its reply, or answering the queue itself. Requests that meet the lock
/// held by such a thread are handed to it; a thread whose request goes on to slow work
/// after the lock (an fsync's write-back, a WRITE's data) is waited for instead.
pub fn answering_handoffs<R>(f: impl FnOnce() -> R) -> R {
    let before = ANSWERS_HANDOFFS.with(|a| a.replace(true));
    let result = f();
    ANSWERS_HANDOFFS.with(|a| a.set(before));
    result
}

impl Deref for MetaGuard<'_> {
    type Target = Meta;
    fn deref(&self) -> &Meta {
        &self.guard
    }
}

impl DerefMut for MetaGuard<'_> {
    fn deref_mut(&mut self) -> &mut Meta {
        &mut self.guard
    }
}

impl Drop for MetaGuard<'_> {
    fn drop(&mut self) {
        self.refresh_written_inodes();
        let runs = self
            .guard
            .fs
            .as_mut()
            .map(Fs::take_freed)
            .unwrap_or_default();
        if self.server.fault() == Some(Fault::LateDevInval) && !runs.is_empty() {
            // Test-only: the old order (unlock, then notify), with a window wide enough for
            // kmodel's concurrent mode to be handed a freed block first.
            self.unlock();
            std::thread::sleep(std::time::Duration::from_millis(LATE_DEV_INVAL_MS));
            self.server.invalidate(&runs);
            return;
        }
        self.server.invalidate(&runs);
        self.unlock();
    }
}

impl MetaGuard<'_> {
    /// Releases the lock; called exactly once, from `drop`.
    fn unlock(&mut self) {
        if self.by_drainer {
            self.server
                .meta_held_by_drainer
                .store(false, Ordering::SeqCst);
        }
        // SAFETY: dropped exactly once (`drop` calls this once); the guard is not used
        // after this.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
    }

    /// Brings the inode cache up to date with every inode written under the lock: the
    /// kernel holds them (a new file, its parent), and a GETATTR of them would otherwise
    /// wait for this lock. An inode that cannot be read again is dropped.
    fn refresh_written_inodes(&mut self) {
        let meta: &mut Meta = &mut self.guard;
        let Some(fs) = meta.fs.as_mut() else { return };
        let mut written = fs.take_written_inodes();
        written.sort_unstable();
        written.dedup();
        // Read first, so the cache's own lock is held only for the map changes.
        let fresh: Vec<_> = written
            .into_iter()
            .map(|ino| {
                let held = ino == ext2fs::ROOT_INO || meta.lookups.contains_key(&ino);
                (ino, held.then(|| fs.read_inode(ino).ok()).flatten())
            })
            .collect();
        self.server.inodes.refresh(fresh);
    }
}

/// How late `fault=late_dev_inval` sends the invalidation.
const LATE_DEV_INVAL_MS: u64 = 20;

const DATA_LOCK_STRIPES: usize = 256;

pub struct Server {
    meta: Mutex<Meta>,
    /// Set while a thread that answers the hand-off queue holds `meta`
    /// (`MetaGuard::by_drainer`).
    meta_held_by_drainer: AtomicBool,
    /// Regular files written with O_DIRECT whose cached pages in the kernel may be stale
    /// (see `Server::open`), with the handles opened since the last such write, each of
    /// which made the kernel drop them. Its own lock, taken after `meta` when both are
    /// held: RELEASE needs only this.
    direct_written: Mutex<HashMap<Ino, HashSet<u64>>>,
    data: DataDevice,
    block_size: u32,
    /// ext4's largest file size for this filesystem (EFBIG beyond it).
    max_file_size: u64,
    /// The inode numbers a node id may name: the root, and `first_ino..=inodes_count`.
    first_ino: Ino,
    inodes_count: Ino,
    data_locks: Vec<RwLock<()>>,
    /// Inodes the kernel holds, for GETATTR and STATX without the metadata lock.
    inodes: inodes::InodeCache,
    opts: MountOptions,
    /// Negotiated at INIT.
    iomap: AtomicBool,
    /// FUSE_WRITEBACK_CACHE negotiated: the kernel caches buffered writes.
    writeback: AtomicBool,
    /// FUSE_SETXATTR_EXT negotiated: SETXATTR requests have the 16-byte header.
    setxattr_ext: AtomicBool,
    proto_minor: AtomicU32,
    next_fh: AtomicU64,
    /// Write errors, reported per open file handle.
    wb: wberr::WbErrors,
    /// Held by each sync from taking what it writes back to the end: a sync that finds
    /// ranges another sync took (still being written back) must not answer before them.
    sync_order: Mutex<()>,
    /// Device syncs so far (for `fault=fail_sync:N`).
    #[cfg(feature = "fault-injection")]
    syncs: AtomicU64,
    /// Set when the session should stop (DESTROY answered).
    finished: AtomicBool,
    /// Set by SHUTDOWN_FS: changes are refused from then on.
    shut_down: AtomicBool,
    /// A change was requested since the last periodic commit.
    changed: AtomicBool,
    /// Set when the filesystem is found corrupt or a request panicked: changes are
    /// refused (EROFS) as after ext4's errors=remount-ro; EXT2_ERROR_FS is on disk.
    errored: AtomicBool,
    /// Whether iomap can work here: the data device can be registered with the kernel.
    iomap_reach: OnceLock<IomapReach>,
    /// The kernel's id for our device in iomap mappings.
    backing_dev: AtomicU32,
    /// The connection, for ioctls and notifications that are not replies.
    transport: OnceLock<Arc<dyn Transport>>,
}

/// Whether the kernel at the other end of the transport can do iomap I/O on our device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IomapReach {
    /// A block device it can be given (or a kernel model that answers for it).
    Capable,
    /// An image file: the kernel's BACKING_OPEN refuses regular files.
    ImageFile,
    /// virtio-fs: the guest kernel reaches no device of ours (iomap is for fuseblk mounts,
    /// whose block device the kernel itself opens).
    VirtioFs,
}

/// A /dev/fuse or kernel-socket server: whether the source is a block device (or the
/// kernel is a model that answers for one).
impl From<bool> for IomapReach {
    fn from(capable: bool) -> Self {
        if capable {
            IomapReach::Capable
        } else {
            IomapReach::ImageFile
        }
    }
}

impl IomapReach {
    /// Why iomap cannot work, for the log; `None` when it can.
    pub fn why_not(self) -> Option<&'static str> {
        match self {
            IomapReach::Capable => None,
            IomapReach::ImageFile => Some(
                "the source is not a block device (attach the image to a loop device to use iomap)",
            ),
            IomapReach::VirtioFs => Some(
                "over virtio-fs the guest kernel has no block device of ours (iomap needs a fuseblk mount)",
            ),
        }
    }
}

impl Server {
    /// A server on the filesystem in `image` (a file or a device), opened read-write
    /// unless `opts.read_only`, with a descriptor of its own for file data.
    pub fn open_image(image: &std::path::Path, opts: MountOptions) -> anyhow::Result<Self> {
        use anyhow::Context;
        let fs = Fs::open(image, !opts.read_only)
            .with_context(|| format!("cannot open the ext4 filesystem of {}", image.display()))?;
        let data = std::fs::OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .open(image)
            .with_context(|| format!("cannot open {} for data I/O", image.display()))?;
        Ok(Self::new(fs, data, opts))
    }

    pub fn new(fs: Fs, data: std::fs::File, opts: MountOptions) -> Self {
        let block_size = fs.block_size();
        let info = fs.info();
        let max_file_size = info.max_file_size;
        let errored = fs.is_errored();
        #[allow(unused_mut)]
        let mut fs = fs;
        #[cfg(feature = "fault-injection")]
        if let Some(Fault::FailStep {
            step,
            errno,
            sticky,
        }) = opts.fault
        {
            fs.inject_failure(ext2fs::FailPlan {
                step,
                errno,
                sticky,
            });
        }
        Self {
            meta: Mutex::new(Meta {
                fs: Some(fs),
                lookups: HashMap::new(),
                orphans: HashSet::new(),
                dircache: Default::default(),
            }),
            direct_written: Mutex::default(),
            meta_held_by_drainer: AtomicBool::new(false),
            inodes: Default::default(),
            data: DataDevice::new(data, block_size),
            block_size,
            max_file_size,
            first_ino: info.first_ino,
            inodes_count: info.inodes_count,
            data_locks: (0..DATA_LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
            opts,
            iomap: AtomicBool::new(false),
            writeback: AtomicBool::new(false),
            setxattr_ext: AtomicBool::new(false),
            proto_minor: AtomicU32::new(0),
            next_fh: AtomicU64::new(1),
            wb: Default::default(),
            sync_order: Mutex::new(()),
            #[cfg(feature = "fault-injection")]
            syncs: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
            changed: AtomicBool::new(false),
            errored: AtomicBool::new(errored),
            iomap_reach: OnceLock::new(),
            backing_dev: AtomicU32::new(0),
            transport: OnceLock::new(),
        }
    }

    /// Connects the server to its transport. `reach` says whether the kernel can be given
    /// the data device, and if not, why.
    pub fn attach(&self, transport: Arc<dyn Transport>, reach: impl Into<IomapReach>) {
        let _ = self.transport.set(transport);
        let _ = self.iomap_reach.set(reach.into());
    }

    pub(crate) fn iomap_reach(&self) -> IomapReach {
        self.iomap_reach
            .get()
            .copied()
            .unwrap_or(IomapReach::ImageFile)
    }

    /// How requests are laid out, after what INIT negotiated.
    pub fn wire_layout(&self) -> fuse_wire::Layout {
        fuse_wire::Layout {
            setxattr_ext: self.setxattr_ext.load(Ordering::Relaxed),
        }
    }

    pub fn mode(&self) -> Mode {
        if self.iomap.load(Ordering::Relaxed) {
            Mode::Iomap
        } else {
            Mode::Classic
        }
    }

    /// Whether the kernel caches buffered writes (FUSE_WRITEBACK_CACHE negotiated): it then
    /// keeps size and times itself, and writes back later.
    pub(crate) fn writeback_cache(&self) -> bool {
        self.writeback.load(Ordering::Relaxed)
    }

    /// The options the server was started with.
    pub fn options(&self) -> &MountOptions {
        &self.opts
    }

    pub fn iomap_policy(&self) -> IomapPolicy {
        self.opts.iomap
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    /// Whether a node id's inode number may name an inode we handed out: the root, or
    /// `first_ino..=inodes_count` (never a reserved inode).
    pub(crate) fn is_valid_ino(&self, ino: Ino) -> bool {
        ino == ext2fs::ROOT_INO || (self.first_ino..=self.inodes_count).contains(&ino)
    }

    /// Errors the filesystem (see `mark_errored`), taking the metadata lock for it.
    pub(crate) fn mark_errored_now(&self, why: &str) {
        self.mark_errored(&mut self.meta(), why);
    }

    /// Set by SHUTDOWN_FS: changes are refused from then on.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Relaxed)
    }

    /// Set when the filesystem is errored: changes are refused (EROFS).
    pub(crate) fn is_errored(&self) -> bool {
        self.errored.load(Ordering::SeqCst)
    }

    /// A change was requested: the next periodic commit has work.
    pub(crate) fn note_change(&self) {
        self.changed.store(true, Ordering::Relaxed);
    }

    /// `-o debug`: log every request.
    pub(crate) fn debug(&self) -> bool {
        self.opts.debug
    }

    /// The metadata lock. Dropping the guard tells the kernel about blocks freed under it
    /// before the lock is released (see [`MetaGuard`]).
    ///
    /// A request that panicked while holding it may have left libext2fs' state half
    /// changed: the lock is still handed out (reads go on, and DESTROY must close), but the
    /// filesystem is errored first, so nothing changes it any more.
    pub(crate) fn meta(&self) -> MetaGuard<'_> {
        let guard = match self.meta.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                self.mark_errored(&mut guard, "a request panicked while changing metadata");
                guard
            }
        };
        let by_drainer = ANSWERS_HANDOFFS.with(Cell::get);
        if by_drainer {
            self.meta_held_by_drainer.store(true, Ordering::SeqCst);
        }
        MetaGuard {
            guard: ManuallyDrop::new(guard),
            server: self,
            by_drainer,
        }
    }

    /// Errors the filesystem (see `errored`), once, with the reason in the log.
    pub(crate) fn mark_errored(&self, meta: &mut Meta, why: &str) {
        if !self.errored.swap(true, Ordering::SeqCst) {
            tracing::error!(
                "the filesystem is errored ({why}): changes are refused from now on, and it \
                 stays marked with errors until `e2fsck -f` repairs it"
            );
        }
        if let Some(fs) = meta.fs.as_mut() {
            fs.mark_error();
        }
    }

    /// The fault this server injects (always `None` without the `fault-injection` feature).
    pub(crate) fn fault(&self) -> Option<Fault> {
        if cfg!(feature = "fault-injection") {
            self.opts.fault
        } else {
            None
        }
    }

    pub(crate) fn data_lock(&self, ino: Ino) -> &RwLock<()> {
        &self.data_locks[ino as usize % DATA_LOCK_STRIPES]
    }

    fn attr_flags(&self) -> u32 {
        if self.iomap.load(Ordering::Relaxed) {
            fuse_wire::consts::FUSE_ATTR_IOMAP | fuse_wire::consts::FUSE_ATTR_EXCLUSIVE
        } else {
            0
        }
    }

    pub(crate) fn attr_out(&self, ino: Ino, inode: &Inode) -> AttrOut {
        AttrOut {
            attr_valid: self.opts.attr_timeout,
            attr_valid_nsec: 0,
            dummy: 0,
            attr: to_attr(ino, inode, self.block_size, self.attr_flags()),
        }
    }

    /// An entry reply; the kernel now holds one more lookup reference on `ino`.
    pub(crate) fn entry_out(&self, meta: &mut Meta, ino: Ino, inode: &Inode) -> EntryOut {
        *meta.lookups.entry(ino).or_insert(0) += 1;
        self.entry_out_peek(ino, inode)
    }

    /// An entry reply without taking a reference (the caller accounts for it).
    pub(crate) fn entry_out_peek(&self, ino: Ino, inode: &Inode) -> EntryOut {
        EntryOut {
            nodeid: nodeid_of(ino),
            generation: inode.generation() as u64,
            entry_valid: self.opts.attr_timeout,
            attr_valid: self.opts.attr_timeout,
            entry_valid_nsec: 0,
            attr_valid_nsec: 0,
            attr: to_attr(ino, inode, self.block_size, self.attr_flags()),
        }
    }

    /// Tells the kernel to drop freed blocks `(first, count)` from the device's page cache
    /// (iomap mode: the kernel writes file data around that cache, so a stale cached
    /// metadata block must never be written back over new data). Nothing in classic mode.
    fn invalidate(&self, runs: &[(u64, u64)]) {
        let dev = self.backing_dev.load(Ordering::Relaxed);
        if runs.is_empty() || self.mode() != Mode::Iomap || dev == 0 {
            return;
        }
        let Some(transport) = self.transport.get() else {
            return;
        };
        let bs = self.block_size as u64;
        for &(blk, n) in runs {
            let payload = fuse_wire::structs::IomapDevInvalOut {
                dev,
                reserved: 0,
                range: fuse_wire::structs::Range {
                    offset: blk * bs,
                    length: n * bs,
                },
            };
            if let Err(e) = crate::reply::send_notification(
                transport.as_ref(),
                fuse_wire::iomap::FUSE_NOTIFY_IOMAP_DEV_INVAL,
                payload.as_bytes(),
            ) {
                tracing::warn!("cannot send FUSE_NOTIFY_IOMAP_DEV_INVAL: {e}");
            }
        }
    }

    /// Tells the kernel that its cached attributes of `ino` are stale: the server changed
    /// something the kernel did not ask for (fallocate dropping setgid) and would otherwise
    /// show until the attribute timeout. Transports without notifications (virtio-fs) skip it.
    pub(crate) fn invalidate_attrs(&self, ino: Ino) {
        // Negative: the attributes only, no page cache.
        self.notify_inval_inode(ino, -1);
    }

    /// Has the kernel write back the dirty pages it caches of `ino` from byte `from` on
    /// (the writeback cache), and drop them with its attributes: each dirty page is written
    /// (a WRITE the other threads serve) before the notification returns. Nothing over
    /// transports without notifications, nor without the writeback cache.
    pub(crate) fn write_back_kernel_pages(&self, ino: Ino, from: u64) {
        if self.writeback_cache() {
            self.notify_inval_inode(ino, i64::try_from(from).unwrap_or(i64::MAX));
        }
    }

    /// FUSE_NOTIFY_INVAL_INODE: attributes, and with `off` >= 0 the cached pages from `off`
    /// to the end of the file.
    fn notify_inval_inode(&self, ino: Ino, off: i64) {
        let Some(transport) = self.transport.get() else {
            return;
        };
        let payload = fuse_wire::structs::NotifyInvalInodeOut {
            ino: crate::attr::nodeid_of(ino),
            off,
            len: 0,
        };
        if let Err(e) = crate::reply::send_notification(
            transport.as_ref(),
            fuse_wire::opcode::FUSE_NOTIFY_INVAL_INODE,
            payload.as_bytes(),
        ) {
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                tracing::warn!("cannot send FUSE_NOTIFY_INVAL_INODE: {e}");
            }
        }
    }

    /// Whether the server itself writes file bytes (classic mode). In iomap mode the
    /// kernel moves and zeroes file data; the server writing through its buffered fd would
    /// race with the kernel's direct bios.
    pub(crate) fn moves_data(&self) -> bool {
        self.mode() == Mode::Classic
    }

    /// The O_DIRECT-written files (`direct_written`). Plain map operations under it: a
    /// poisoned lock still guards a whole map.
    pub(crate) fn direct_written(&self) -> MutexGuard<'_, HashMap<Ino, HashSet<u64>>> {
        self.direct_written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the metadata lock is held right now by a thread that answers the hand-off
    /// queue as soon as its request is done (`answering_handoffs`).
    pub fn meta_holder_drains(&self) -> bool {
        self.meta_held_by_drainer.load(Ordering::SeqCst)
    }

    /// The request loop calls this on each worker thread before serving.
    pub fn prepare_thread(&self, transport: &dyn Transport) {
        if self.mode() == Mode::Iomap {
            // Memory reclaim must not recurse into this filesystem through us.
            if let Err(e) = transport.set_nofs() {
                tracing::warn!("FUSE_DEV_IOC_SET_NOFS failed: {e}");
            }
        }
    }

    /// Drops kernel references; frees inodes that were unlinked while referenced.
    pub(crate) fn forget(&self, list: &[(u64, u64)]) {
        let mut meta = self.meta();
        for &(nodeid, n) in list {
            let Some(ino) = ino_of(nodeid) else { continue };
            let left = match meta.lookups.get_mut(&ino) {
                Some(count) => {
                    *count = count.saturating_sub(n);
                    *count
                }
                None => continue,
            };
            if left == 0 {
                meta.lookups.remove(&ino);
                self.direct_written().remove(&ino);
                self.inodes.remove(&[ino]);
                self.wb.forget(ino);
                if let Err(e) = self.free_if_orphan(&mut meta, ino) {
                    tracing::warn!(ino, "cannot free unlinked inode: {e:?}");
                }
            }
        }
    }

    /// Frees `ino` if it is an orphan the kernel no longer references.
    pub(crate) fn free_if_orphan(&self, meta: &mut Meta, ino: Ino) -> Result<(), Errno> {
        if meta.lookups.contains_key(&ino) || !meta.orphans.remove(&ino) {
            return Ok(());
        }
        let freed = Self::free_unlinked(meta, ino);
        if freed.is_err() {
            // Still on the on-disk orphan list: tried again at unmount, or the next mount.
            meta.orphans.insert(ino);
        }
        freed
    }

    /// Frees `ino` if nothing links to it any more.
    fn free_unlinked(meta: &mut Meta, ino: Ino) -> Result<(), Errno> {
        let fs = meta.fs()?;
        if fs.read_only() {
            return Ok(());
        }
        let inode = fs.read_inode(ino)?;
        if inode.links() == 0 && inode.mode() != 0 {
            fs.free_inode(ino)?;
        }
        Ok(())
    }

    /// Makes everything durable: the changed allocation metadata (bitmaps and descriptors
    /// of the groups that changed, the superblock) is written, then one `fdatasync` of the
    /// device carries it, the inodes and directories (written when they changed) and the
    /// file data. Not `ext2fs_flush`'s rewrite of every bitmap and every backup.
    ///
    /// A failure is charged to the files written since the last sync (`wberr`), whose
    /// handles' next FSYNC reports it, and returned.
    pub fn sync(&self) -> Result<(), Errno> {
        self.sync_charged().0
    }

    /// `sync`, and whether its failure was charged to any file.
    pub(crate) fn sync_charged(&self) -> (Result<(), Errno>, bool) {
        // The ticket is taken in turn: a sync running meanwhile may see (and charge) a
        // failure of the inodes it names.
        let _order = self.sync_order.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = self.wb.sync_started();
        let result = self.sync_device();
        let charged = self.wb.sync_done(ticket, result);
        (result, charged)
    }

    fn sync_device(&self) -> Result<(), Errno> {
        {
            let mut meta = self.meta();
            let fs = meta.fs()?;
            if !fs.read_only() {
                fs.commit()?;
                // The fdatasync below writes them back with everything else.
                let _ = fs.take_device_writes();
            }
        }
        self.injected_sync_failure()?;
        self.data.sync()?;
        Ok(())
    }

    /// Makes `ino` durable as ext4's fsync does (its data, and the metadata, its own among
    /// it), writing back nothing else: the changed allocation metadata is committed, then
    /// the device ranges libext2fs wrote since the last sync and the ranges `ino`'s data
    /// went to are written back, then the device's write cache is flushed (`DataDevice::
    /// sync_file`). Other files' data stays dirty. A failure is charged as a failed sync of
    /// the whole device would be (`wberr`), and returned.
    pub(crate) fn sync_inode(&self, ino: Ino) -> Result<(), Errno> {
        self.sync_inode_charged(ino).0
    }

    /// `sync_inode`, and whether its failure was charged to any file.
    pub(crate) fn sync_inode_charged(&self, ino: Ino) -> (Result<(), Errno>, bool) {
        let _order = self.sync_order.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.sync_inode_uncharged(ino);
        let charged = self.wb.partial_sync_done(result);
        (result, charged)
    }

    fn sync_inode_uncharged(&self, ino: Ino) -> Result<(), Errno> {
        let metadata = {
            let mut meta = self.meta();
            let fs = meta.fs()?;
            if fs.read_only() {
                return Ok(());
            }
            fs.commit()?;
            fs.take_device_writes()
        };
        self.injected_sync_failure()?;
        self.data.sync_file(ino, metadata)?;
        Ok(())
    }

    /// Test-only (`fault=fail_sync:N`): the Nth sync of the device fails as a failed
    /// write-back does, once (the dirty pages stay for the next sync). It fails after
    /// taking the metadata ranges from the log and before writing them back, so the next
    /// syncs are of the whole device.
    fn injected_sync_failure(&self) -> Result<(), Errno> {
        #[cfg(feature = "fault-injection")]
        if let Some(Fault::FailSync { nth }) = self.fault() {
            if self.syncs.fetch_add(1, Ordering::Relaxed) + 1 == nth {
                self.data.need_full_sync();
                return Err(Errno(libc::EIO));
            }
        }
        Ok(())
    }

    /// A sync of part of the device failed in a write of `ino`: the failure is charged
    /// to it and to the files written since the last sync (`wberr`), then returned.
    pub(crate) fn range_sync_failed(&self, ino: Ino, e: std::io::Error) -> Errno {
        let e = Errno::from(e);
        self.wb.range_sync_failed(ino, e);
        e
    }

    /// ext4's commit interval (`-o commit=`).
    pub fn commit_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.opts.commit)
    }

    /// The periodic commit: if anything changed since the last one, `sync`. Metadata then
    /// never stays only in memory for longer than the interval.
    pub fn commit_if_changed(&self) {
        if !self.changed.swap(false, Ordering::Relaxed) {
            return;
        }
        match self.sync() {
            Ok(_) => tracing::debug!("periodic commit done"),
            // Closed (after DESTROY) or read-only: nothing to do.
            Err(Errno(libc::EIO | libc::EROFS)) if self.meta().fs.is_none() => {}
            Err(Errno(e)) => tracing::warn!(
                "periodic commit failed: {}",
                std::io::Error::from_raw_os_error(e)
            ),
        }
    }

    /// Frees orphans, flushes and closes the filesystem. Idempotent. The filesystem is
    /// closed whatever else fails. An orphan that cannot be freed stays on the on-disk
    /// orphan list for the next mount to free: logged, not an error. Returns the first
    /// error of closing and syncing.
    pub fn shutdown(&self) -> Result<(), Errno> {
        let mut meta = self.meta();
        let Some(_) = meta.fs.as_ref() else {
            return Ok(());
        };
        meta.lookups.clear();
        meta.dircache.clear();
        self.direct_written().clear();
        self.wb.clear();
        let mut first_error = None;
        let orphans: Vec<Ino> = meta.orphans.drain().collect();
        for ino in orphans {
            if let Err(e) = Self::free_unlinked(&mut meta, ino) {
                tracing::warn!(ino, "cannot free an unlinked inode at unmount ({e:?}): it stays on the orphan list for the next mount");
            }
        }
        let fs = meta.fs.take().expect("checked above");
        self.inodes.clear();
        #[cfg(feature = "fault-injection")]
        if let Some(Fault::FailStep { .. }) = self.fault() {
            // Tests read this to know whether the failure they planned was reached.
            tracing::info!("fault injection: {} steps taken", fs.steps_taken());
        }
        if let Err(e) = fs.close() {
            tracing::error!("closing the filesystem failed: {e}");
            first_error.get_or_insert(e.into());
        }
        if let Err(e) = self.data.sync() {
            first_error.get_or_insert(e.into());
        }
        first_error.map_or(Ok(()), Err)
    }

    pub(crate) fn destroy(&self) -> Result<(), Errno> {
        // `finished` is set by the session once this reply is sent: a worker that saw it
        // earlier would close the connection under the reply.
        self.shutdown()
    }

    /// The session ends: DESTROY has been answered.
    pub fn mark_finished(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }
}
