//! Tests on real kconfig output: the files under harness/kernel/testdata/kconfig were
//! written by Linux 6.12's kconfig (`make tinyconfig`, merge_config.sh,
//! `make olddefconfig`), see testdata/kconfig/README.

use super::*;

fn testdata(name: &str) -> PathBuf {
    plumbing::paths::workspace_root()
        .join("harness/kernel/testdata/kconfig")
        .join(name)
}

fn real(name: &str) -> Config {
    parse_config(&std::fs::read_to_string(testdata(name)).unwrap())
}

fn fragment(name: &str, text: &str) -> Fragment {
    Fragment {
        name: name.into(),
        path: PathBuf::from(name),
        text: text.into(),
        requests: parse_fragment(text).unwrap(),
    }
}

fn repo_fragment(name: &str) -> Fragment {
    let path = plumbing::paths::workspace_root()
        .join("kernel-config")
        .join(format!("{name}.config"));
    Fragment::load(name, &path).unwrap()
}

#[test]
fn parses_all_line_kinds() {
    let reqs = parse_fragment(
        "# comment\n\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x y=z\"\nCONFIG_E=0x10\nCONFIG_F=-1\n",
    )
    .unwrap();
    let got: Vec<(&str, &str, usize)> = reqs
        .iter()
        .map(|r| (r.symbol.as_str(), r.value.as_str(), r.line))
        .collect();
    assert_eq!(
        got,
        vec![
            ("CONFIG_A", "y", 3),
            ("CONFIG_B", "m", 4),
            ("CONFIG_C", "n", 5),
            ("CONFIG_D", "\"x y=z\"", 6),
            ("CONFIG_E", "0x10", 7),
            ("CONFIG_F", "-1", 8),
        ]
    );
}

#[test]
fn rejects_malformed_fragment_lines() {
    for (text, line, want) in [
        ("CONFIG_A=y\nFOO=y\n", 2, "not a CONFIG_ symbol"),
        ("CONFIG_A y\n", 1, "expected CONFIG_NAME=value"),
        ("CONFIG_A=\n", 1, "empty value"),
        ("CONFIG_A=two words\n", 1, "must be y, m, n"),
        ("CONFIG_=y\n", 1, "not a CONFIG_ symbol"),
    ] {
        let (l, msg) = parse_fragment(text).unwrap_err();
        assert_eq!(l, line, "{text}");
        assert!(msg.contains(want), "{text}: {msg}");
    }
}

#[test]
fn fragment_load_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.config");
    std::fs::write(&p, "CONFIG_OK=y\nnonsense\n").unwrap();
    let err = Fragment::load("bad", &p).unwrap_err();
    assert_eq!(
        plumbing::error::exit_code(&err),
        plumbing::error::EXIT_USAGE
    );
    assert!(err.to_string().contains("bad.config:2"), "{err}");
}

#[test]
fn real_configs_parse() {
    let tiny = real("tinyconfig-6.12.config");
    // Facts of this tinyconfig: 64-bit x86, no printk, XZ-compressed image.
    assert_eq!(tiny.get("CONFIG_X86_64").map(String::as_str), Some("y"));
    assert_eq!(tiny.get("CONFIG_PRINTK").map(String::as_str), Some(NOT_SET));
    assert_eq!(tiny.get("CONFIG_KERNEL_XZ").map(String::as_str), Some("y"));
    assert!(tiny
        .get("CONFIG_CC_VERSION_TEXT")
        .unwrap()
        .starts_with("\"gcc"));
    // Comment lines such as "# Automatically generated file" are not symbols.
    assert!(tiny.keys().all(|k| k.starts_with("CONFIG_")));
}

#[test]
fn the_repo_base_fragment_is_fully_satisfied_by_its_real_output() {
    let base = repo_fragment("base");
    assert!(base.requests.len() > 50);
    let mismatches = verify(&[base], &real("base-final-6.12.config"));
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

#[test]
fn base_requests_are_not_met_by_tinyconfig_alone() {
    let mismatches = verify(&[repo_fragment("base")], &real("tinyconfig-6.12.config"));
    let syms: Vec<&str> = mismatches.iter().map(|m| m.symbol.as_str()).collect();
    assert!(syms.contains(&"CONFIG_FUSE_FS"));
    assert!(syms.contains(&"CONFIG_PRINTK"));
    let lz4 = mismatches
        .iter()
        .find(|m| m.symbol == "CONFIG_KERNEL_LZ4")
        .unwrap();
    assert_eq!(lz4.got.as_deref(), Some(NOT_SET));
    assert_eq!(lz4.fragment, "base");
}

#[test]
fn real_scenario_reports_each_kind_of_miss() {
    let text = std::fs::read_to_string(testdata("scenario.fragment")).unwrap();
    let f = fragment("scenario", &text);
    let m = verify(&[f], &real("scenario-final-6.12.config"));
    let by_sym: BTreeMap<&str, &Mismatch> = m.iter().map(|m| (m.symbol.as_str(), m)).collect();
    // Unknown to the tree (no FUSE iomap series) and unmet dependencies (no
    // DM / DEBUG_KERNEL): kconfig dropped them, so they are absent.
    for sym in [
        "CONFIG_FUSE_IOMAP",
        "CONFIG_DM_FLAKEY",
        "CONFIG_DEFAULT_HUNG_TASK_TIMEOUT",
    ] {
        assert_eq!(by_sym[sym].got, None, "{sym}");
    }
    assert_eq!(by_sym["CONFIG_FUSE_IOMAP"].line, 6);
    // Satisfied: a choice, a disable, a bool and a string.
    for sym in [
        "CONFIG_KERNEL_LZ4",
        "CONFIG_PRINTK",
        "CONFIG_CMDLINE_BOOL",
        "CONFIG_CMDLINE",
    ] {
        assert!(!by_sym.contains_key(sym), "{sym} should be satisfied");
    }
    assert_eq!(m.len(), 3);
}

#[test]
fn later_fragments_win_and_overrides_are_reported() {
    let a = fragment("base", "CONFIG_A=y\nCONFIG_B=y\n");
    let b = fragment("debug", "# CONFIG_A is not set\nCONFIG_C=\"s\"\n");
    let both = [a.clone(), b.clone()];
    let eff = effective_requests(&both);
    assert_eq!(eff["CONFIG_A"].0, "n");
    assert_eq!(eff["CONFIG_A"].1.name, "debug");
    assert_eq!(eff["CONFIG_B"].1.name, "base");
    let ov = overrides(&[a.clone(), b.clone()]);
    assert_eq!(
        ov,
        vec![("CONFIG_A".into(), "base=y".into(), "debug=n".into())]
    );

    let mut cfg = Config::new();
    cfg.insert("CONFIG_B".into(), "y".into());
    cfg.insert("CONFIG_C".into(), "\"s\"".into());
    // CONFIG_A absent counts as "not set": satisfied.
    assert!(verify(&[a.clone(), b.clone()], &cfg).is_empty());
    cfg.insert("CONFIG_A".into(), "y".into());
    let m = verify(&[a, b], &cfg);
    assert_eq!(m.len(), 1);
    assert_eq!(
        (
            m[0].symbol.as_str(),
            m[0].wanted.as_str(),
            m[0].fragment.as_str()
        ),
        ("CONFIG_A", "n", "debug")
    );
}

#[test]
fn numbers_compare_by_value_strings_exactly() {
    let f = fragment("f", "CONFIG_H=0x10\nCONFIG_S=\"a\"\n");
    let mut cfg = Config::new();
    cfg.insert("CONFIG_H".into(), "16".into());
    cfg.insert("CONFIG_S".into(), "\"A\"".into());
    let m = verify(&[f], &cfg);
    assert_eq!(
        m.iter().map(|m| m.symbol.as_str()).collect::<Vec<_>>(),
        vec!["CONFIG_S"]
    );
}

#[test]
fn diff_of_real_configs() {
    let tiny = real("tinyconfig-6.12.config");
    let fin = real("base-final-6.12.config");
    let changes = diff(&tiny, &fin);
    let get = |s: &str| changes.iter().find(|c| c.symbol == s);
    let fuse = get("CONFIG_FUSE_FS").expect("FUSE_FS changed");
    assert_eq!(fuse.after.as_deref(), Some("y"));
    let xz = get("CONFIG_KERNEL_XZ").expect("XZ changed");
    assert_eq!(
        (xz.before.as_deref(), xz.after.as_deref()),
        (Some("y"), Some(NOT_SET))
    );
    // Unchanged symbols are not listed; "absent" vs "is not set" is no change.
    assert!(get("CONFIG_X86_64").is_none());
    assert!(changes
        .iter()
        .all(|c| c.before.as_deref().unwrap_or(NOT_SET) != c.after.as_deref().unwrap_or(NOT_SET)));
    assert!(diff(&fin, &fin).is_empty());
}

#[test]
fn kconfig_symbol_scan() {
    let syms: Vec<String> = symbols_defined_in(
        "config FUSE_FS\n\ttristate \"x\"\nmenuconfig MD\n  config INDENTED\n# config NOT\n",
    )
    .collect();
    assert_eq!(syms, vec!["CONFIG_FUSE_FS", "CONFIG_MD", "CONFIG_INDENTED"]);
}
