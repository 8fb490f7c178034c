//! INIT negotiation: protocol version, capability flags, and the iomap decision.

use std::sync::atomic::Ordering;

use fuse_wire::consts::*;
use fuse_wire::iomap::{init_bit43_meaning, offers_iomap, FUSE_IOMAP, IOMAP_MINOR};
use fuse_wire::structs::{InitIn, InitOut};

use super::{Errno, IomapReach, Server};
use crate::options::IomapPolicy;

/// Largest WRITE payload we ask for; requests are read into buffers of this plus headroom.
pub const MAX_WRITE: u32 = 1 << 20;
/// Largest READ the kernel sends (max_pages pages); bigger requests are refused.
pub const MAX_READ: u32 = MAX_WRITE;

/// Capabilities the server wants when the kernel offers them.
const WANTED: u64 = FUSE_ASYNC_READ
    | FUSE_ATOMIC_O_TRUNC
    | FUSE_BIG_WRITES
    | FUSE_DO_READDIRPLUS
    | FUSE_READDIRPLUS_AUTO
    | FUSE_ASYNC_DIO
    | FUSE_PARALLEL_DIROPS
    | FUSE_MAX_PAGES
    | FUSE_CACHE_SYMLINKS
    // File handles (name_to_handle_at, NFS export) outlive the kernel's inode cache: it
    // finds an uncached inode again by LOOKUP of "." in it (see `Server::lookup`).
    | FUSE_EXPORT_SUPPORT
    // The kernel enforces ACLs; the server keeps modes in step and inherits defaults.
    | FUSE_POSIX_ACL
    // ...which needs the unmasked mode and the umask to apply them itself, and the
    // kernel's word that a setfacl caller may not keep the setgid bit (16-byte SETXATTR).
    | FUSE_DONT_MASK
    | FUSE_SETXATTR_EXT
    | FUSE_INIT_EXT;

impl Server {
    pub(crate) fn init(&self, arg: &InitIn) -> Result<InitOut, Errno> {
        if arg.major != KERNEL_VERSION {
            tracing::error!(
                "kernel speaks FUSE {}.{}, this server speaks 7.x",
                arg.major,
                arg.minor
            );
            return Err(Errno(libc::EPROTO));
        }
        if arg.minor < MIN_SUPPORTED_MINOR {
            tracing::error!(
                "kernel speaks FUSE 7.{}; iomapfs needs 7.{MIN_SUPPORTED_MINOR} or newer",
                arg.minor
            );
            return Err(Errno(libc::EPROTO));
        }
        let offered = if arg.flags & (FUSE_INIT_EXT as u32) != 0 {
            join_init_flags(arg.flags, arg.flags2)
        } else {
            arg.flags as u64
        };
        // The bit alone is not an offer: mainline 7.3 (minor 46) sends bit 43 meaning
        // FUSE_HAS_IO_URING_BUFPOOL, and taking it for iomap would leave file data unmoved.
        let bit43 = offered & FUSE_IOMAP != 0;
        let iomap_offered = offers_iomap(arg.minor, offered);
        if bit43 && !iomap_offered {
            tracing::info!(
                "the kernel speaks FUSE 7.{}, below the iomap minor 7.{IOMAP_MINOR}: its INIT bit 43 means {} there, not FUSE_IOMAP",
                arg.minor,
                init_bit43_meaning(arg.minor)
            );
        }
        // Offered, but the kernel cannot reach our device through this transport.
        let unreachable = iomap_offered
            .then(|| self.iomap_reach().why_not())
            .flatten();
        if let Some(why) = unreachable {
            tracing::info!("the kernel offers iomap, but {why}: classic mode");
        }
        let iomap_offered = iomap_offered && unreachable.is_none();
        let use_iomap = match self.iomap_policy() {
            IomapPolicy::Off => false,
            IomapPolicy::Auto => iomap_offered,
            IomapPolicy::On if iomap_offered => true,
            IomapPolicy::On if unreachable.is_some() => {
                tracing::error!("iomap=on, but {}", unreachable.unwrap_or_default());
                return Err(Errno(libc::EPROTO));
            }
            IomapPolicy::On if bit43 && arg.minor < IOMAP_MINOR => {
                tracing::error!(
                    "iomap=on, but the kernel speaks FUSE 7.{}, below the iomap minor 7.{IOMAP_MINOR}: \
                     its INIT bit 43 means {} there, not FUSE_IOMAP, so this kernel lacks the FUSE \
                     iomap series",
                    arg.minor,
                    init_bit43_meaning(arg.minor)
                );
                return Err(Errno(libc::EPROTO));
            }
            IomapPolicy::On => {
                tracing::error!(
                    "iomap=on, but the kernel did not offer FUSE_IOMAP: it lacks the FUSE iomap \
                     series (CONFIG_FUSE_IOMAP), or fuse.enable_iomap is off, or the mounter \
                     lacks CAP_SYS_RAWIO"
                );
                return Err(Errno(libc::EPROTO));
            }
        };
        let mut flags = offered & WANTED;
        if use_iomap {
            flags |= FUSE_IOMAP | FUSE_INIT_EXT;
        } else if self.iomap_reach() != IomapReach::VirtioFs {
            // The server drops setuid/setgid on WRITE, O_TRUNC open and truncate, so the
            // kernel stops asking for security.capability before every write (a GETXATTR
            // round trip per write(2): half the speed of small writes). Not with iomap,
            // where writes never reach the server; not over virtio-fs, which cannot tell
            // the kernel its cached mode changed (FUSE_NOTIFY_INVAL_INODE).
            flags |= offered & FUSE_HANDLE_KILLPRIV_V2;
            // The kernel keeps buffered writes in its page cache and sends them in large
            // WRITEs (a 64 KiB O_APPEND write was a round trip, and an allocating one a
            // device wait). It then trusts its own size and times, and keeps st_blocks
            // until told: `write` tells it when a WRITE allocated (see there).
            if self.opts.writeback_cache {
                flags |= offered & FUSE_WRITEBACK_CACHE;
            }
        }
        self.iomap.store(use_iomap, Ordering::Relaxed);
        self.writeback
            .store(flags & FUSE_WRITEBACK_CACHE != 0, Ordering::Relaxed);
        self.setxattr_ext
            .store(flags & FUSE_SETXATTR_EXT != 0, Ordering::Relaxed);
        self.proto_minor.store(arg.minor, Ordering::Relaxed);
        let (flags_lo, flags_hi) = split_init_flags(flags);
        let minor = if use_iomap {
            IOMAP_MINOR
        } else {
            KERNEL_MINOR_VERSION.min(arg.minor.max(MIN_SUPPORTED_MINOR))
        };
        tracing::info!(
            "connected: kernel FUSE 7.{}, replying 7.{minor}, mode {}",
            arg.minor,
            self.mode().name()
        );
        if let Some(path) = &self.opts.mode_file {
            if let Err(e) = std::fs::write(path, format!("{}\n", self.mode().name())) {
                tracing::warn!("cannot write the mode file {}: {e}", path.display());
            }
        }
        // The test harness's per-test record of what every mount negotiated (a test may
        // mount several times, through helpers it does not control, like fstests' mounts).
        if let Some(path) = std::env::var_os(MODE_LOG_ENV) {
            append_mode(std::path::Path::new(&path), self.mode().name());
        }
        let out = InitOut {
            major: KERNEL_VERSION,
            minor,
            max_readahead: arg.max_readahead,
            flags: flags_lo,
            max_background: DEFAULT_MAX_BACKGROUND,
            congestion_threshold: DEFAULT_CONGESTION_THRESHOLD,
            max_write: MAX_WRITE,
            time_gran: 1,
            max_pages: (MAX_WRITE / 4096) as u16,
            map_alignment: 0,
            flags2: flags_hi,
            ..Default::default()
        };
        Ok(out)
    }
}

/// Environment variable naming a file to which every server appends the mode it
/// negotiated, one line each (`iomap` or `classic`).
pub const MODE_LOG_ENV: &str = "IOMAPFS_MODE_LOG";

fn append_mode(path: &std::path::Path, mode: &str) {
    use std::io::Write;
    // One short O_APPEND write per server: lines from concurrent servers do not mix.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{mode}\n").as_bytes()));
    if let Err(e) = written {
        tracing::warn!("cannot append to the mode log {}: {e}", path.display());
    }
}
