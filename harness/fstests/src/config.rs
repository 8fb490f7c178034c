//! local.config: how fstests learns about our filesystems, one `[section]` per
//! configuration.
//!
//! fstests reads a config that has sections by pulling `KEY=value` lines out of the chosen
//! section with sed and `eval`ing `export KEY="value"` (common/config,
//! parse_config_section), so a value:
//! - may be quoted only at its start and end, never contain `"`, `'` or `#` (comment), or a
//!   newline, and never have blanks around an `=` (they are squeezed out);
//! - is expanded inside double quotes, so `\`, `$` and `` ` `` are escaped here;
//! - carries over into later sections unless set again. We therefore write every key we
//!   own in every section (FUSE_SUBTYP empty when unused) and blank the `extra` keys an
//!   earlier section set. An empty MKFS_OPTIONS/MOUNT_OPTIONS means "fstests' default or
//!   the previous section's", which is how fstests treats an empty value.
//!
//! Section names may use letters, digits, `_` and `-` (what get_config_sections accepts).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::str::FromStr;

use anyhow::bail;

/// How fstests names the FUSE filesystem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Upstream fstests: FSTYP=fuse FUSE_SUBTYP=.iomapfs (mount -t fuse.iomapfs).
    FuseSubtype,
    /// FUSE iomap development trees: FSTYP=fuse.ext4.
    FuseExt4,
    /// FUSE iomap development trees, block-device flavour: FSTYP=fuseblk.ext4.
    FuseblkExt4,
    /// The kernel's own ext4 (FSTYP=ext4): the control section, never iomapfs. Not a
    /// `--fstests-scheme` value.
    KernelExt4,
    /// Upstream FSTYP=virtiofs: the devices are virtio-fs tags the host serves (`vm-test
    /// --virtiofs`); fstests cannot mkfs them, only empty the scratch filesystem.
    Virtiofs,
}

impl Scheme {
    /// The FSTYP value.
    pub fn fstyp(self) -> &'static str {
        match self {
            Scheme::FuseSubtype => "fuse",
            Scheme::FuseExt4 => "fuse.ext4",
            Scheme::FuseblkExt4 => "fuseblk.ext4",
            Scheme::KernelExt4 => "ext4",
            Scheme::Virtiofs => "virtiofs",
        }
    }

    /// The FUSE_SUBTYP value ("" when the scheme has none).
    pub fn fuse_subtype(self) -> &'static str {
        match self {
            Scheme::FuseSubtype => ".iomapfs",
            Scheme::FuseExt4 | Scheme::FuseblkExt4 | Scheme::KernelExt4 | Scheme::Virtiofs => "",
        }
    }
}

impl FromStr for Scheme {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Scheme> {
        match s {
            "fuse-subtype" => Ok(Scheme::FuseSubtype),
            "fuse.ext4" => Ok(Scheme::FuseExt4),
            "fuseblk.ext4" => Ok(Scheme::FuseblkExt4),
            "virtiofs" => Ok(Scheme::Virtiofs),
            other => bail!(
                "unknown fstests FSTYP scheme {other:?} (expected fuse-subtype, fuse.ext4, \
                 fuseblk.ext4 or virtiofs)"
            ),
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::FuseSubtype => "fuse-subtype",
            Scheme::FuseExt4 => "fuse.ext4",
            Scheme::FuseblkExt4 => "fuseblk.ext4",
            Scheme::KernelExt4 => "ext4",
            Scheme::Virtiofs => "virtiofs",
        })
    }
}

/// One `[name]` section of local.config.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub name: String,
    pub scheme: Scheme,
    pub test_dev: String,
    pub test_dir: String,
    pub scratch_dev: String,
    pub scratch_mnt: String,
    pub mkfs_options: String,
    /// Used for both the scratch (MOUNT_OPTIONS) and the test (TEST_FS_MOUNT_OPTS)
    /// filesystem, and as FUSE_MOUNT_OPTIONS with the fuse-subtype scheme.
    pub mount_options: String,
    /// Further variables, written after the standard ones.
    pub extra: Vec<(String, String)>,
}

impl Section {
    /// The variables of this section, in the order they are written.
    fn variables(&self) -> Vec<(&str, &str)> {
        let mut vars = vec![
            ("FSTYP", self.scheme.fstyp()),
            ("FUSE_SUBTYP", self.scheme.fuse_subtype()),
            ("TEST_DEV", self.test_dev.as_str()),
            ("TEST_DIR", self.test_dir.as_str()),
            ("SCRATCH_DEV", self.scratch_dev.as_str()),
            ("SCRATCH_MNT", self.scratch_mnt.as_str()),
            ("MKFS_OPTIONS", self.mkfs_options.as_str()),
            ("MOUNT_OPTIONS", self.mount_options.as_str()),
            ("TEST_FS_MOUNT_OPTS", self.mount_options.as_str()),
        ];
        if self.scheme == Scheme::FuseSubtype {
            vars.push(("FUSE_MOUNT_OPTIONS", self.mount_options.as_str()));
        }
        vars.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        vars
    }
}

/// Renders local.config. Values that fstests cannot represent (see the module docs) are
/// written anyway; use [`try_render_local_config`] to refuse them.
pub fn render_local_config(sections: &[Section]) -> String {
    let mut out = String::from(
        "# fstests local.config, generated by fuse-iomap-harness; one [section] per \
         configuration.\n",
    );
    let mut extra_seen: BTreeSet<&str> = BTreeSet::new();
    for section in sections {
        let _ = writeln!(out, "\n[{}]", section.name);
        let own: BTreeSet<&str> = section.extra.iter().map(|(k, _)| k.as_str()).collect();
        for (key, value) in section.variables() {
            let _ = writeln!(out, "{key}=\"{}\"", escape(value));
        }
        // An earlier section's extra variables would otherwise carry over into this one.
        for key in extra_seen.difference(&own) {
            let _ = writeln!(out, "{key}=\"\"");
        }
        extra_seen.extend(own);
    }
    out
}

/// [`render_local_config`] after checking that fstests will read back exactly what we
/// wrote: section names, variable names and values.
pub fn try_render_local_config(sections: &[Section]) -> anyhow::Result<String> {
    if sections.is_empty() {
        bail!("local.config: no sections");
    }
    let mut names = BTreeSet::new();
    for section in sections {
        let name = &section.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!("local.config: section name {name:?} must be letters, digits, '_' or '-'");
        }
        if !names.insert(name.as_str()) {
            bail!("local.config: section {name:?} appears twice");
        }
        if section.test_dev.is_empty() || section.test_dir.is_empty() {
            bail!("local.config: section {name}: TEST_DEV and TEST_DIR are required by fstests");
        }
        let mut keys = BTreeSet::new();
        for (key, value) in section.variables() {
            let key_ok = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok {
                bail!("local.config: section {name}: {key:?} is not a shell variable name");
            }
            if !keys.insert(key) {
                bail!("local.config: section {name}: {key} is set twice");
            }
            if let Some(problem) = unrepresentable(value) {
                bail!("local.config: section {name}: {key}={value:?}: {problem}");
            }
        }
    }
    Ok(render_local_config(sections))
}

/// Why fstests' section parser would change `value`, if it would.
fn unrepresentable(value: &str) -> Option<&'static str> {
    if value.contains(['"', '\'']) {
        return Some("quotes cannot appear inside a value");
    }
    if value.contains('#') {
        return Some("'#' starts a comment in local.config");
    }
    if value.contains(['\n', '\r']) {
        return Some("a value must fit on one line");
    }
    let bytes = value.as_bytes();
    let blank_next_to_eq = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'='
            && (i
                .checked_sub(1)
                .is_some_and(|j| bytes[j].is_ascii_whitespace())
                || bytes.get(i + 1).is_some_and(u8::is_ascii_whitespace))
    });
    if blank_next_to_eq {
        return Some("blanks around '=' are removed by fstests");
    }
    None
}

/// Escapes what double quotes would expand.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: &str, scheme: Scheme) -> Section {
        Section {
            name: name.into(),
            scheme,
            test_dev: "/dev/vdb".into(),
            test_dir: "/mnt/test".into(),
            scratch_dev: "/dev/vdc".into(),
            scratch_mnt: "/mnt/scratch".into(),
            mkfs_options: "-b 4096 -O ^inline_data".into(),
            mount_options: "-o iomap=on,allow_other".into(),
            extra: vec![],
        }
    }

    #[test]
    fn scheme_names_round_trip() {
        for s in [Scheme::FuseSubtype, Scheme::FuseExt4, Scheme::FuseblkExt4] {
            assert_eq!(s.to_string().parse::<Scheme>().unwrap(), s);
        }
        assert_eq!(Scheme::FuseExt4.fstyp(), "fuse.ext4");
        assert!("fuse"
            .parse::<Scheme>()
            .unwrap_err()
            .to_string()
            .contains("fuse-subtype"));
    }

    #[test]
    fn renders_one_stanza_per_section_with_scheme_variables() {
        let mut second = section("iomapfs_1k", Scheme::FuseblkExt4);
        second.mkfs_options = "-b 1024".into();
        second.extra = vec![("LOAD_FACTOR".into(), "2".into())];
        let text = render_local_config(&[section("iomapfs_4k", Scheme::FuseSubtype), second]);
        let expected_first = "\n[iomapfs_4k]\nFSTYP=\"fuse\"\nFUSE_SUBTYP=\".iomapfs\"\n\
            TEST_DEV=\"/dev/vdb\"\nTEST_DIR=\"/mnt/test\"\nSCRATCH_DEV=\"/dev/vdc\"\n\
            SCRATCH_MNT=\"/mnt/scratch\"\nMKFS_OPTIONS=\"-b 4096 -O ^inline_data\"\n\
            MOUNT_OPTIONS=\"-o iomap=on,allow_other\"\nTEST_FS_MOUNT_OPTS=\"-o iomap=on,allow_other\"\n\
            FUSE_MOUNT_OPTIONS=\"-o iomap=on,allow_other\"\n";
        assert!(text.contains(expected_first), "{text}");
        let expected_second = "\n[iomapfs_1k]\nFSTYP=\"fuseblk.ext4\"\nFUSE_SUBTYP=\"\"\n";
        assert!(text.contains(expected_second), "{text}");
        assert!(
            text.ends_with("TEST_FS_MOUNT_OPTS=\"-o iomap=on,allow_other\"\nLOAD_FACTOR=\"2\"\n"),
            "{text}"
        );
        assert_eq!(text.matches("\n[").count(), 2);
    }

    #[test]
    fn earlier_extras_are_blanked_and_specials_escaped() {
        let mut first = section("a", Scheme::FuseExt4);
        first.extra = vec![("SOAK_DURATION".into(), "10m".into())];
        let mut second = section("b", Scheme::FuseExt4);
        second.mount_options = "-o x=$HOME`id`\\".into();
        let text = try_render_local_config(&[first, second]).unwrap();
        let b = &text[text.find("[b]").unwrap()..];
        assert!(b.contains("\nSOAK_DURATION=\"\"\n"), "{b}");
        assert!(
            b.contains("MOUNT_OPTIONS=\"-o x=\\$HOME\\`id\\`\\\\\"\n"),
            "{b}"
        );
    }

    #[test]
    fn try_render_refuses_what_fstests_would_misread() {
        let check = |edit: &dyn Fn(&mut Section)| {
            let mut s = section("ok", Scheme::FuseSubtype);
            edit(&mut s);
            format!("{:#}", try_render_local_config(&[s]).unwrap_err())
        };
        assert!(check(&|s| s.name = "iomap fs".into()).contains("section name"));
        assert!(check(&|s| s.name = "a.b".into()).contains("section name"));
        assert!(check(&|s| s.test_dev.clear()).contains("TEST_DEV and TEST_DIR are required"));
        assert!(check(&|s| s.mount_options = "-o a=\"b\"".into()).contains("quotes"));
        assert!(check(&|s| s.mkfs_options = "-E x#y".into()).contains("comment"));
        assert!(check(&|s| s.mkfs_options = "a\nb".into()).contains("one line"));
        assert!(check(&|s| s.mkfs_options = "-o a = b".into()).contains("blanks around '='"));
        assert!(
            check(&|s| s.extra = vec![("1X".into(), "v".into())]).contains("not a shell variable")
        );
        assert!(check(&|s| s.extra = vec![("FSTYP".into(), "v".into())]).contains("set twice"));
        let dup = [
            section("a", Scheme::FuseExt4),
            section("a", Scheme::FuseExt4),
        ];
        assert!(try_render_local_config(&dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(try_render_local_config(&[]).is_err());
    }
}
