//! The seeded image-mutation fuzzer (issue 17, item 4): at least 2,000 mutated images in
//! CI, each served, walked, read and written without a panic, a crash, a hang, a protocol
//! violation or a write outside the blocks the bitmaps mark in use. `KMODEL_FUZZ_IMAGES=N`
//! runs N images, `KMODEL_FUZZ_SEED=S` starts at another seed; `kmodel --fuzz N` runs them
//! by hand.

mod common;

use std::time::Duration;

#[test]
fn mutated_images_never_panic_hang_or_write_outside_used_blocks() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let dir = tempfile::Builder::new()
        .prefix("kmodel-fuzz-")
        .tempdir()
        .unwrap();
    let cfg = kmodel::fuzz::FuzzConfig {
        server: common::server_binary(),
        seed: env("KMODEL_FUZZ_SEED", 0x17),
        count: env("KMODEL_FUZZ_IMAGES", 2000),
        jobs: 2,
        reply_timeout: Duration::from_secs(10),
        workdir: dir.path().to_path_buf(),
    };
    let report = kmodel::fuzz::fuzz(&cfg).unwrap();
    println!("{report}");
    if !report.findings.is_empty() {
        let kept = dir.keep();
        panic!(
            "fuzzing found problems (images kept in {}):\n{report}",
            kept.display()
        );
    }
    assert_eq!(report.images, cfg.count);
    assert!(
        report.served > report.images / 4,
        "most images should be served: {report}"
    );
}
