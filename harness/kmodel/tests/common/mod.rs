//! Shared test setup: the iomapfs binary (built once per test process) and fresh images.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use kmodel::{Kernel, ServerSpec};

/// The iomapfs the tests drive: test-support's build (`cargo build -p iomapfs --bins
/// --features fault-injection`: the tests inject faults); `KMODEL_SERVER=PATH` tests another
/// build.
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KMODEL_SERVER") {
        return PathBuf::from(path);
    }
    match test_support::bins::iomapfs_bins() {
        Ok(bins) => bins.server.clone(),
        Err(e) => panic!("{e:#}"),
    }
}

/// A fresh image and a server spec for it, in a temporary directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub spec: ServerSpec,
}

impl Fixture {
    pub fn new(size: u64, block_size: u32, options: &[&str]) -> Fixture {
        Fixture::with_features(size, block_size, "^inline_data", options)
    }

    /// A fresh image made with `mkfs.ext4 -O features`.
    pub fn with_features(size: u64, block_size: u32, features: &str, options: &[&str]) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("kmodel-test-")
            .tempdir()
            .expect("tempdir");
        let image = dir.path().join("image.ext4");
        kmodel::image::mkfs_with(&image, size, block_size, features).expect("mkfs.ext4");
        let spec = ServerSpec {
            binary: server_binary(),
            image,
            options: options.iter().map(|s| s.to_string()).collect(),
            workdir: dir.path().to_path_buf(),
            env: Vec::new(),
        };
        Fixture { dir, spec }
    }

    pub fn mount(&self) -> Kernel {
        Kernel::mount(&self.spec, Duration::from_secs(60)).unwrap_or_else(|e| panic!("mount: {e}"))
    }

    /// Everything the servers started on this fixture logged.
    pub fn server_logs(&self) -> String {
        let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
            .expect("read the fixture directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("iomapfs-") && n.ends_with(".log"))
            })
            .collect();
        logs.sort();
        logs.iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }
}
