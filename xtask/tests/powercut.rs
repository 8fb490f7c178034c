//! Power cuts in the VM (`cargo xtask powercut`): QEMU is killed at seeded random moments
//! while the churn and append workloads run on iomapfs; after `e2fsck -p` every
//! acknowledged record and file must be there, and no file may hold another file's blocks.

use std::process::Command;

#[test]
fn acknowledged_writes_survive_power_cuts() {
    if !test_support::needs(test_support::needs::tool_from(
        "qemu-system-x86_64",
        "qemu-system-x86",
    )) {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "powercut",
            "--cycles",
            "2",
            "--seed",
            "0x5eed",
            "--min-cut",
            "3",
            "--max-cut",
            "10",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report = stdout
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("no report path: {stdout}"));
    let cycles: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let cycles = cycles.as_array().unwrap();
    assert_eq!(cycles.len(), 2, "{stdout}");
    for c in cycles {
        assert!(c["acked_records"].as_u64().unwrap() > 0, "{c}");
        assert!(c["acked_churn_ops"].as_u64().unwrap() > 0, "{c}");
        assert!(c["preen_exit"].as_i64().unwrap() < 4, "preen failed: {c}");
        assert_eq!(c["clean_after_preen"], true, "{c}");
        assert_eq!(c["findings"], 0, "{c}");
    }
}
