//! FUSE wire protocol.
