//! Directories and whole-filesystem queries: readdir(plus), statfs, statx.

use ext2fs::{FileType, Ino};
use fuse_wire::reply::DirentBuf;
use fuse_wire::structs::{EntryOut, Kstatfs, OpenOut, StatfsOut, StatxOut};

use super::{Errno, Server};

/// d_type values (DT_*) for readdir.
fn dtype(t: FileType) -> u32 {
    match t {
        FileType::Regular => libc::DT_REG as u32,
        FileType::Dir => libc::DT_DIR as u32,
        FileType::CharDev => libc::DT_CHR as u32,
        FileType::BlockDev => libc::DT_BLK as u32,
        FileType::Fifo => libc::DT_FIFO as u32,
        FileType::Socket => libc::DT_SOCK as u32,
        FileType::Symlink => libc::DT_LNK as u32,
        FileType::Unknown => libc::DT_UNKNOWN as u32,
    }
}

/// A READDIRPLUS entry without attributes (nodeid 0): the kernel lists the name and
/// takes no reference.
fn listed_only(ino: Ino) -> EntryOut {
    let mut entry = EntryOut::default();
    entry.attr.ino = ino as u64;
    entry
}

impl Server {
    pub(crate) fn opendir(&self, ino: Ino, _flags: u32) -> Result<OpenOut, Errno> {
        let mut meta = self.meta();
        Self::read_dir_inode(&mut meta, ino)?;
        Ok(OpenOut {
            fh: 0,
            // Directory contents may be cached between opens: only we change them.
            open_flags: fuse_wire::consts::FOPEN_CACHE_DIR | fuse_wire::consts::FOPEN_KEEP_CACHE,
            ..Default::default()
        })
    }

    pub(crate) fn readdir(
        &self,
        ino: Ino,
        cookie: u64,
        size: u32,
        plus: bool,
    ) -> Result<DirentBuf, Errno> {
        let mut meta = self.meta();
        let mut dir = Self::read_dir_inode(&mut meta, ino)?;
        if cookie == 0 {
            self.touch_atime(&mut meta, ino, &mut dir, true)?;
        }
        let mut buf = DirentBuf::new(size as usize);
        // Entries are packed during the walk, up to the first that does not fit: a
        // directory is walked once, not once per reply.
        let mut problems = Vec::new();
        let mut failed = None;
        let m = &mut *meta;
        let (fs, lookups) = (m.fs.as_ref().ok_or(Errno(libc::EIO))?, &mut m.lookups);
        fs.read_dir(ino, cookie, |e| {
            let (child, name, next, dt) = (e.ino, e.name, e.next_cookie, dtype(e.ftype));
            if name.contains(&b'/') || name.contains(&0) {
                // The kernel refuses a whole READDIR reply over one such name (EIO); a
                // corrupt entry is left out instead, and the filesystem errored.
                let shown = String::from_utf8_lossy(name);
                problems.push(format!("directory {ino} has an entry named {shown:?}"));
                return true;
            }
            if !plus {
                return buf.push(child as u64, next, dt, name);
            }
            // The kernel takes no references for "." and "..". An inode it already holds
            // has attributes it keeps exact (only this mount changes them): without them
            // it skips the entry instead of looking the name up in its dcache and
            // refreshing the inode, and the inode is not read here.
            let dot = name == b"." || name == b"..";
            if dot || lookups.contains_key(&child) {
                return buf.push_plus(&listed_only(child), next, dt, name);
            }
            match fs.read_inode(child) {
                Ok(inode) => {
                    let fits = buf.push_plus(&self.entry_out_peek(child, &inode), next, dt, name);
                    if fits {
                        *lookups.entry(child).or_insert(0) += 1;
                    }
                    fits
                }
                Err(e) if e.errno() == libc::EUCLEAN => {
                    // An entry naming a reserved or impossible inode: listed, but without
                    // attributes, so the kernel never gets it.
                    problems.push(format!("directory {ino}: {e}"));
                    buf.push_plus(&listed_only(child), next, dt, name)
                }
                Err(e) => {
                    failed = Some(Errno::from(e));
                    false
                }
            }
        })?;
        for why in &problems {
            self.mark_errored(&mut meta, why);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(buf)
    }

    pub(crate) fn statfs(&self) -> Result<StatfsOut, Errno> {
        let mut meta = self.meta();
        let info = meta.fs()?.info();
        let st = Kstatfs {
            blocks: info.blocks_count,
            bfree: info.free_blocks,
            bavail: info.free_blocks.saturating_sub(info.reserved_blocks),
            files: info.inodes_count as u64,
            ffree: info.free_inodes as u64,
            bsize: info.block_size,
            namelen: 255,
            frsize: info.block_size,
            ..Default::default()
        };
        Ok(StatfsOut { st })
    }

    pub(crate) fn statx(&self, ino: Ino) -> Result<StatxOut, Errno> {
        let inode = self.attr_inode(ino)?;
        let attr = crate::attr::to_attr(ino, &inode, self.block_size, self.attr_flags());
        let mut out = StatxOut {
            attr_valid: self.opts.attr_timeout,
            ..Default::default()
        };
        let st = &mut out.stat;
        st.mask = libc::STATX_BASIC_STATS;
        st.blksize = attr.blksize;
        st.nlink = attr.nlink;
        st.uid = attr.uid;
        st.gid = attr.gid;
        st.mode = attr.mode as u16;
        st.ino = attr.ino;
        st.size = attr.size;
        st.blocks = attr.blocks;
        let ts = |t: ext2fs::Timestamp| fuse_wire::structs::SxTime {
            tv_sec: t.sec,
            tv_nsec: t.nsec,
            __reserved: 0,
        };
        st.atime = ts(inode.atime());
        if let Some(b) = inode.crtime() {
            st.btime = ts(b);
            st.mask |= libc::STATX_BTIME;
        }
        st.ctime = ts(inode.ctime());
        st.mtime = ts(inode.mtime());
        st.rdev_major = nix::sys::stat::major(attr.rdev as u64) as u32;
        st.rdev_minor = nix::sys::stat::minor(attr.rdev as u64) as u32;
        Ok(out)
    }
}
