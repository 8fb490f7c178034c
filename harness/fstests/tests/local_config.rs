//! local.config read back by bash, the way fstests reads a config with sections: values
//! carry from one section into the next, so section N is the result of sections 1..=N.

use std::path::Path;
use std::process::Command;

use fstests::{render_local_config, try_render_local_config, Scheme, Section};

const VARS: &[&str] = &[
    "FSTYP",
    "FUSE_SUBTYP",
    "TEST_DEV",
    "TEST_DIR",
    "SCRATCH_DEV",
    "SCRATCH_MNT",
    "MKFS_OPTIONS",
    "MOUNT_OPTIONS",
    "TEST_FS_MOUNT_OPTS",
    "FUSE_MOUNT_OPTIONS",
    "LOAD_FACTOR",
];

fn sections() -> Vec<Section> {
    let base = Section {
        name: "iomapfs_4k".into(),
        scheme: Scheme::FuseSubtype,
        test_dev: "/dev/vdb".into(),
        test_dir: "/mnt/test".into(),
        scratch_dev: "/dev/vdc".into(),
        scratch_mnt: "/mnt/scratch".into(),
        mkfs_options: "-b 4096 -O ^inline_data".into(),
        mount_options: "-o iomap=on,allow_other,default_permissions".into(),
        extra: vec![("LOAD_FACTOR".into(), "2".into())],
    };
    let one_k = Section {
        name: "iomapfs-1k".into(),
        scheme: Scheme::FuseblkExt4,
        mkfs_options: "-b 1024".into(),
        mount_options: "-o iomap=off,x=$HOME".into(),
        extra: vec![],
        ..base.clone()
    };
    vec![base, one_k]
}

/// `bash` prints `NAME=<value>|` for each variable after evaluating `script`.
fn bash_vars(script: &str) -> Vec<(String, String)> {
    let mut full = String::from("set -e\n");
    full.push_str(script);
    for v in VARS {
        full.push_str(&format!("\nprintf '%s=%s|\\n' {v} \"${v}\""));
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&full)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.trim_end_matches('|').to_string())
        })
        .collect()
}

fn get<'a>(vars: &'a [(String, String)], name: &str) -> &'a str {
    &vars.iter().find(|(k, _)| k == name).unwrap().1
}

#[test]
fn sections_read_back_with_carry_over() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.config");
    std::fs::write(&file, try_render_local_config(&sections()).unwrap()).unwrap();

    // Our own reading of the format: evaluate the KEY="value" lines of every section up to
    // and including the selected one, in order.
    let read_sections = |upto: &str| {
        bash_vars(&format!(
            "eval \"$(awk -v upto='{upto}' '/^\\[[A-Za-z0-9_-]+\\]$/ {{ if (done) exit; name = substr($0, 2, length($0) - 2); in_s = 1; if (name == upto) done = 1; next }} in_s && /^[A-Za-z_][A-Za-z0-9_]*=/ {{ print }}' {})\"",
            file.display()
        ))
    };

    let four_k = read_sections("iomapfs_4k");
    assert_eq!(get(&four_k, "FSTYP"), "fuse");
    assert_eq!(get(&four_k, "FUSE_SUBTYP"), ".iomapfs");
    assert_eq!(get(&four_k, "TEST_DEV"), "/dev/vdb");
    assert_eq!(get(&four_k, "SCRATCH_MNT"), "/mnt/scratch");
    assert_eq!(get(&four_k, "MKFS_OPTIONS"), "-b 4096 -O ^inline_data");
    assert_eq!(
        get(&four_k, "TEST_FS_MOUNT_OPTS"),
        "-o iomap=on,allow_other,default_permissions"
    );
    assert_eq!(
        get(&four_k, "FUSE_MOUNT_OPTIONS"),
        "-o iomap=on,allow_other,default_permissions"
    );
    assert_eq!(get(&four_k, "LOAD_FACTOR"), "2");

    let one_k = read_sections("iomapfs-1k");
    assert_eq!(get(&one_k, "FSTYP"), "fuseblk.ext4");
    assert_eq!(
        get(&one_k, "FUSE_SUBTYP"),
        "",
        "the first section's subtype must not leak"
    );
    assert_eq!(get(&one_k, "MKFS_OPTIONS"), "-b 1024");
    assert_eq!(
        get(&one_k, "MOUNT_OPTIONS"),
        "-o iomap=off,x=$HOME",
        "no expansion"
    );
    assert_eq!(
        get(&one_k, "LOAD_FACTOR"),
        "",
        "the first section's extra must not leak"
    );
}

#[test]
fn whole_file_sources_in_bash() {
    // Sourcing the whole file is what a config without sections gets; bash must accept
    // every line (the [name] lines run `[`, which fails harmlessly) and end with the last
    // section's values.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.config");
    std::fs::write(&file, render_local_config(&sections())).unwrap();
    let vars = bash_vars(&format!(
        "set +e\nsource {} 2>/dev/null\nset -e",
        file.display()
    ));
    assert_eq!(get(&vars, "FSTYP"), "fuseblk.ext4");
    assert_eq!(get(&vars, "MOUNT_OPTIONS"), "-o iomap=off,x=$HOME");
}

/// With an fstests tree (FSTESTS_SRC=/path/to/xfstests), read the file with fstests' own
/// section functions from its common/config, loaded at test time.
#[test]
#[ignore = "needs an fstests checkout (FSTESTS_SRC), which CI cannot download"]
fn fstests_own_parser_reads_it_when_a_tree_is_given() {
    if !test_support::needs(test_support::needs::env_var(
        "FSTESTS_SRC",
        "a checkout of xfstests-dev",
    )) {
        return;
    }
    let tree = std::env::var_os("FSTESTS_SRC").unwrap();
    let common_config = Path::new(&tree).join("common/config");
    assert!(
        common_config.is_file(),
        "{} missing",
        common_config.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.config");
    std::fs::write(&file, try_render_local_config(&sections()).unwrap()).unwrap();
    let functions = |name: &str| {
        format!(
            "eval \"$(sed -n '/^{name}()/,/^}}/p' {})\"\n",
            common_config.display()
        )
    };
    let mut script = functions("get_config_sections") + &functions("parse_config_section");
    script.push_str(&format!(
        "HOST_OPTIONS={}\nOPTIONS_HAVE_SECTIONS=true\n\
         test \"$(get_config_sections $HOST_OPTIONS | tr '\\n' ' ')\" = 'iomapfs_4k iomapfs-1k '\n\
         parse_config_section iomapfs_4k\nparse_config_section iomapfs-1k\n",
        file.display()
    ));
    let vars = bash_vars(&script);
    assert_eq!(get(&vars, "FSTYP"), "fuseblk.ext4");
    assert_eq!(get(&vars, "FUSE_SUBTYP"), "");
    assert_eq!(get(&vars, "MKFS_OPTIONS"), "-b 1024");
    assert_eq!(get(&vars, "MOUNT_OPTIONS"), "-o iomap=off,x=$HOME");
    assert_eq!(get(&vars, "TEST_DEV"), "/dev/vdb");
    assert_eq!(get(&vars, "LOAD_FACTOR"), "");
}
