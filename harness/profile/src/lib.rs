//! harness.toml: named profiles. Each profile has a `kernel` table (parsed
//! here) and any number of other tables (`image`, `suites`, ...) that the
//! subcommands owning them read with [`Profile::section`].

use anyhow::{Context, Result};
use plumbing::error::usage;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to do about FUSE iomap support in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IomapMode {
    /// The tree must have CONFIG_FUSE_IOMAP; fail before building if not.
    Required,
    /// Enable it when the tree has it; record whether it did.
    #[default]
    Auto,
    /// Build without it (explicitly disabled if the tree has it).
    Off,
}

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

/// The parsed harness.toml.
#[derive(Debug, Clone)]
pub struct HarnessConfig {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// Relative paths in the file are relative to this directory.
    pub base_dir: PathBuf,
    pub profiles: BTreeMap<String, Profile>,
}

/// One `[profiles.NAME]` table.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: Option<String>,
    pub kernel: KernelProfile,
    /// The whole table, for sections other subcommands interpret.
    pub table: toml::Table,
    /// Directory that relative paths in this profile are relative to.
    pub base_dir: PathBuf,
}

/// `[profiles.NAME.kernel]`: where the kernel comes from and how it is
/// configured. At most one source key (`source-dir`, `git`, `tarball`,
/// `debian-package`); command-line flags override these fields.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KernelProfile {
    pub source_dir: Option<PathBuf>,
    pub git: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub tarball: Option<String>,
    pub debian_package: Option<String>,
    /// mbox file or directory of patches.
    pub series: Option<PathBuf>,
    /// lore message-id of a series, fetched with b4.
    pub b4: Option<String>,
    /// Fragment names (kernel-config/NAME.config) or paths, merged in order.
    #[serde(default = "default_fragments")]
    pub fragments: Vec<String>,
    /// Add the debug fragment (KASAN, lockdep, kmemleak, debug info).
    #[serde(default)]
    pub debug: bool,
    #[serde(default)]
    pub iomap: IomapMode,
}

fn default_fragments() -> Vec<String> {
    vec!["base".into(), "fuse-iomap".into()]
}

impl HarnessConfig {
    /// harness.toml at the workspace root.
    pub fn load_default() -> Result<HarnessConfig> {
        Self::load(&plumbing::paths::workspace_root().join("harness.toml"))
    }

    pub fn load(path: &Path) -> Result<HarnessConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&text, path, &base_dir)
    }

    /// Parse harness.toml text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<HarnessConfig> {
        let root: toml::Table =
            toml::from_str(text).map_err(|e| usage(format!("{}: {e}", path.display())))?;
        let mut profiles = BTreeMap::new();
        if let Some(p) = root.get("profiles") {
            let table = p
                .as_table()
                .ok_or_else(|| usage(format!("{}: `profiles` must be a table", path.display())))?;
            for (name, value) in table {
                let profile = Profile::from_value(name, value, base_dir)
                    .map_err(|e| usage(format!("{}: profile `{name}`: {e:#}", path.display())))?;
                profiles.insert(name.clone(), profile);
            }
        }
        Ok(HarnessConfig {
            path: path.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            profiles,
        })
    }

    /// The named profile, or the default one; an unknown name is a usage error.
    pub fn profile(&self, name: Option<&str>) -> Result<&Profile> {
        let name = name.unwrap_or(DEFAULT_PROFILE);
        self.profiles.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            usage(format!(
                "unknown profile `{name}` (profiles in {}: {})",
                self.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}

impl Profile {
    fn from_value(name: &str, value: &toml::Value, base_dir: &Path) -> Result<Profile> {
        let table = value.as_table().context("must be a table")?.clone();
        let description = match table.get("description") {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => anyhow::bail!("`description` must be a string"),
        };
        let kernel = match table.get("kernel") {
            Some(v) => KernelProfile::deserialize(v.clone()).context("[kernel]")?,
            None => anyhow::bail!("missing [kernel] table"),
        };
        kernel.check_sources()?;
        Ok(Profile {
            name: name.to_string(),
            description,
            kernel,
            table,
            base_dir: base_dir.to_path_buf(),
        })
    }

    /// Deserialize another section of this profile (e.g. `image`, `suites`).
    /// `Ok(None)` when absent; a malformed section is a usage error.
    pub fn section<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.table.get(key) {
            None => Ok(None),
            Some(v) => T::deserialize(v.clone())
                .map(Some)
                .map_err(|e| usage(format!("profile `{}`: [{key}]: {e}", self.name))),
        }
    }

    /// A path from this profile, made absolute against harness.toml's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

impl KernelProfile {
    fn check_sources(&self) -> Result<()> {
        let set: Vec<&str> = [
            ("source-dir", self.source_dir.is_some()),
            ("git", self.git.is_some()),
            ("tarball", self.tarball.is_some()),
            ("debian-package", self.debian_package.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| *k)
        .collect();
        if set.len() > 1 {
            anyhow::bail!("[kernel]: choose one source, not {}", set.join(" and "));
        }
        if set.is_empty() {
            anyhow::bail!("[kernel]: no source (set source-dir, git, tarball or debian-package)");
        }
        if self.git_ref.is_some() && self.git.is_none() && self.source_dir.is_none() {
            anyhow::bail!("[kernel]: `ref` needs `git` or `source-dir`");
        }
        if self.series.is_some() && self.b4.is_some() {
            anyhow::bail!("[kernel]: `series` and `b4` are exclusive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plumbing::error::{exit_code, EXIT_USAGE};

    fn parse(text: &str) -> Result<HarnessConfig> {
        HarnessConfig::parse(text, Path::new("harness.toml"), Path::new("/ws"))
    }

    #[test]
    fn the_real_harness_toml_parses() {
        let cfg = HarnessConfig::load_default().expect("harness.toml parses");
        let def = cfg.profile(None).expect("default profile");
        assert_eq!(def.name, "default");
        assert!(
            def.kernel.debian_package.is_some(),
            "default must build offline from a Debian package"
        );
        assert_eq!(def.kernel.iomap, IomapMode::Auto);
        let iomap = cfg.profile(Some("fuse-iomap")).expect("fuse-iomap profile");
        assert_eq!(iomap.kernel.iomap, IomapMode::Required);
        assert!(iomap
            .kernel
            .git
            .as_deref()
            .unwrap_or("")
            .contains("git.kernel.org"));
        assert!(iomap.kernel.git_ref.is_some());
    }

    #[test]
    fn good_profile() {
        let cfg = parse(
            r#"
            [profiles.dev]
            description = "my tree"
            [profiles.dev.kernel]
            source-dir = "../linux"
            series = "p.mbox"
            fragments = ["base", "extra/local.config"]
            debug = true
            iomap = "required"
            [profiles.dev.image]
            release = "bookworm"
            "#,
        )
        .unwrap();
        let p = cfg.profile(Some("dev")).unwrap();
        assert_eq!(p.description.as_deref(), Some("my tree"));
        assert_eq!(p.kernel.source_dir.as_deref(), Some(Path::new("../linux")));
        assert_eq!(
            p.resolve_path(Path::new("../linux")),
            PathBuf::from("/ws/../linux")
        );
        assert_eq!(p.kernel.fragments, vec!["base", "extra/local.config"]);
        assert!(p.kernel.debug);
        assert_eq!(p.kernel.iomap, IomapMode::Required);
        let image: toml::Table = p.section("image").unwrap().unwrap();
        assert_eq!(image["release"].as_str(), Some("bookworm"));
        assert!(p.section::<toml::Table>("suites").unwrap().is_none());
    }

    #[test]
    fn defaults_apply() {
        let cfg = parse("[profiles.x.kernel]\ndebian-package = \"linux-source-6.12\"\n").unwrap();
        let k = &cfg.profile(Some("x")).unwrap().kernel;
        assert_eq!(k.fragments, vec!["base", "fuse-iomap"]);
        assert_eq!(k.iomap, IomapMode::Auto);
        assert!(!k.debug);
    }

    #[test]
    fn bad_profiles_are_usage_errors() {
        let cases = [
            (
                "[profiles.x.kernel]\ngit = \"u\"\ndebian-package = \"p\"\n",
                "choose one source",
            ),
            ("[profiles.x.kernel]\nfragments = [\"base\"]\n", "no source"),
            (
                "[profiles.x.kernel]\ndebian-package = \"p\"\nsurce-dir = \"typo\"\n",
                "unknown field",
            ),
            (
                "[profiles.x.kernel]\ndebian-package = \"p\"\niomap = \"sometimes\"\n",
                "sometimes",
            ),
            (
                "[profiles.x.kernel]\ntarball = \"t\"\nref = \"v1\"\n",
                "`ref` needs",
            ),
            (
                "[profiles.x]\ndescription = \"no kernel\"\n",
                "missing [kernel]",
            ),
            ("[profiles.x.kernel\n", "harness.toml"),
            ("profiles = 3\n", "must be a table"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(exit_code(&err), EXIT_USAGE, "{text}");
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "{text}: {msg}");
        }
    }

    #[test]
    fn unknown_profile_lists_known_ones() {
        let cfg = parse("[profiles.a.kernel]\ndebian-package = \"p\"\n").unwrap();
        let err = cfg.profile(Some("b")).unwrap_err();
        assert_eq!(exit_code(&err), EXIT_USAGE);
        assert!(err.to_string().contains("unknown profile `b`"));
        assert!(err.to_string().contains(": a"));
    }
}
