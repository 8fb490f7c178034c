//! Recording a FUSE session (`-o record=FILE`): every request, reply and notification
//! with a monotonic timestamp, the server thread and the unique, in the versioned format
//! RECORD.md describes. `format` is the file format and its reader, `recorder` writes it
//! at the transport boundary, `snapshot` saves the filesystem a session starts from, and
//! `harness` is how a test harness has every server record (`IOMAPFS_RECORD_DIR`).
//! `crate::replay` plays a recording back.

pub mod format;
pub mod harness;
pub mod recorder;
pub mod snapshot;

pub use format::{Frame, Kind, Meta, ReadError, Reader};
pub use recorder::{Recorder, Recording, MIN_RECORD_MAX};

/// The default `record_max`: a bound on the disk a forgotten recording can fill.
pub const DEFAULT_RECORD_MAX: u64 = 1 << 30;

/// The `transport` of a vhost-user (virtio-fs) backend's recording; a replay serves it as
/// virtio-fs, with what that negotiates.
pub const TRANSPORT_VHOST_USER: &str = "vhost-user";

/// How the server was started, for the header: what a replay needs to start the same
/// server on the same filesystem, and to check that it was given the same image.
pub struct SessionInfo<'a> {
    /// `dev-fuse`, `kernel-socket`, ...
    pub transport: &'a str,
    /// Whether the data device can be registered for iomap (see `Server::attach`).
    pub iomap_capable: bool,
    pub source: &'a std::path::Path,
    /// The `-o` words the server was started with.
    pub options: &'a [String],
    pub fs: &'a ext2fs::FsInfo,
}

impl SessionInfo<'_> {
    pub fn meta(&self) -> Meta {
        let mut meta = Meta::default();
        meta.set("server", concat!("iomapfs ", env!("CARGO_PKG_VERSION")));
        meta.set("transport", self.transport);
        meta.set("iomap_capable", u8::from(self.iomap_capable));
        meta.set("source", self.source.display());
        meta.set("options", self.options.join(","));
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        meta.set(
            "started",
            format!("{}.{:09}", started.as_secs(), started.subsec_nanos()),
        );
        meta.set("fs_uuid", hex(&self.fs.uuid));
        meta.set("fs_block_size", self.fs.block_size);
        meta.set("fs_free_blocks", self.fs.free_blocks);
        meta.set("fs_free_inodes", self.fs.free_inodes);
        meta
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
