//! Safe layer over libext2fs.
