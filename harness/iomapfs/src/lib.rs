//! iomapfs: a FUSE server for ext4 (through libext2fs) that speaks classic FUSE and the
//! FUSE iomap extension.
//!
//! Layout: `options` parses `-o`; `mount` talks to mount(2); `transport` carries requests
//! (/dev/fuse or a socket; `vhost_user` is virtio-fs); `session` runs the request loop; `dispatch` routes each decoded
//! request to its operation and `reply` encodes the typed answer; `server` holds the
//! filesystem state and implements the operations (errors are `errno::Errno`); `engine`
//! maps file ranges to the device; `data` moves file bytes (`bufpool` recycles READ reply
//! buffers); `record` records a session at the transport boundary and `replay` plays one
//! back (RECORD.md).

pub mod attr;
pub mod bufpool;
pub mod data;
pub mod dispatch;
pub mod engine;
pub mod errno;
pub mod fault;
pub mod helper;
pub mod lock;
pub mod mount;
pub mod options;
pub mod preen;
pub mod record;
pub mod replay;
pub mod reply;
pub mod server;
pub mod session;
pub mod transport;
pub mod vhost_user;
