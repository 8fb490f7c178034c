//! kmodel: a userspace model of the Linux kernel's FUSE iomap client.
//!
//! It plays the kernel for iomapfs over the server's `--kernel-socket` transport: INIT
//! offering FUSE_IOMAP, IOMAP_CONFIG, lookups and creates, then every data path the way
//! fs/fuse and fs/iomap perform it (protocol doc §7): ask IOMAP_BEGIN, validate the reply
//! with the kernel's rules, move the bytes to or from the image at the mapped address,
//! send IOMAP_END and IOMAP_IOEND exactly when the kernel would. A sparse model of every
//! file is the oracle; seeded random sequences check it step by step, across remounts, and
//! finally with `e2fsck -fn` and an independent reader (ext4-view).
//!
//! - [`session`]: the server process and the SEQPACKET socket, alone or shared by several
//!   kernel threads ([`SharedSession`]);
//! - [`wire`]: request building, reply decoding, readable descriptions;
//! - [`kernel`]: INIT/CONFIG (also as other kernels offer it, [`InitOffer`]), the inode
//!   table, namespace ops, sync, freeze, unmount;
//! - [`device`]: the backing device's page cache: DEV_INVAL checks, and the stale page a
//!   late invalidation leaves over file data;
//! - [`iomap`]: the fs/iomap data paths (read, write, zero, writeback, direct I/O,
//!   truncate, fallocate, FIEMAP, SEEK_DATA/SEEK_HOLE, swapfiles);
//! - [`cache`]: the dirty page cache;
//! - [`oracle`]: expected file contents;
//! - [`image`]: mkfs, e2fsck, ext4-view;
//! - [`random`]: seeded random sequences; [`random::concurrent`] runs several at once on one
//!   connection, as a kernel's many tasks do (`kmodel --threads N`);
//! - [`fuzz`]: seeded image mutation: corrupt metadata, serve, walk, read, write; no panic,
//!   hang, violation or write outside used blocks (`kmodel --fuzz N`, `KMODEL_FUZZ_IMAGES`).
//!
//! Running: `cargo test -p kmodel` (the tests build iomapfs themselves). `KMODEL_SEED=N`
//! replays one random seed, `KMODEL_OPS=N` sets the operations per seed, `KMODEL_SERVER`
//! points at another iomapfs build, `KMODEL_TRACE=1` prints every request and reply.
//! The `kmodel` binary runs one sequence by hand: `kmodel --seed N --ops N [-o fault=...]`.

pub mod cache;
pub mod device;
pub mod error;
pub mod fuzz;
pub mod image;
pub mod iomap;
pub mod kernel;
pub mod oracle;
pub mod random;
pub mod session;
pub mod wire;

pub use error::{Error, Mismatch, Result};
pub use iomap::{FiemapExtent, Mapping};
pub use kernel::{InitOffer, Inode, Kernel, NodeId};
pub use oracle::SparseFile;
pub use random::concurrent::{run_concurrent, ConcurrentReport};
pub use random::{run, RunConfig, RunFailure, RunReport};
pub use session::{ServerSpec, Session, SharedSession};
