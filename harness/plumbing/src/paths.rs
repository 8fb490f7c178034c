//! Well-known locations: the workspace root and the shared cache directory.

use std::path::PathBuf;

/// The workspace root (where harness.toml and kernel-config/ live).
pub fn workspace_root() -> PathBuf {
    // This crate lives at harness/plumbing/ under the workspace root.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or(manifest)
}

/// The harness cache, outside the checkout so fresh clones on one machine
/// share it: `$FUSE_IOMAP_HARNESS_CACHE`, else
/// `$XDG_CACHE_HOME/fuse-iomap-harness`, else `~/.cache/fuse-iomap-harness`.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(|k| std::env::var_os(k))
}

fn cache_dir_from(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let non_empty = |k: &str| get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty("FUSE_IOMAP_HARNESS_CACHE") {
        return dir;
    }
    if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        return xdg.join("fuse-iomap-harness");
    }
    let home = non_empty("HOME").unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("fuse-iomap-harness")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> PathBuf {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cache_dir_from(|k| m.get(k).map(Into::into))
    }

    #[test]
    fn cache_dir_precedence() {
        let all = [
            ("FUSE_IOMAP_HARNESS_CACHE", "/x/harness"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(resolve(&all), PathBuf::from("/x/harness"));
        assert_eq!(resolve(&all[1..]), PathBuf::from("/xdg/fuse-iomap-harness"));
        assert_eq!(
            resolve(&all[2..]),
            PathBuf::from("/home/u/.cache/fuse-iomap-harness")
        );
        // Empty values count as unset.
        assert_eq!(
            resolve(&[("FUSE_IOMAP_HARNESS_CACHE", ""), ("HOME", "/h")]),
            PathBuf::from("/h/.cache/fuse-iomap-harness")
        );
    }

    #[test]
    fn workspace_root_has_harness_toml_dir() {
        assert!(workspace_root().join("xtask").join("Cargo.toml").is_file());
    }
}
