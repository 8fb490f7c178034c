//! The kernel command line a test VM boots with, beyond what the `vm` crate always sets:
//! the profile's `[profiles.NAME.vm] append`, FUSE iomap switched on when the kernel has it,
//! then the user's `--append` (last, so it can override).

use anyhow::Result;
use serde::Deserialize;

/// The FUSE iomap series ships with `fuse.enable_iomap` off (protocol doc §10): without
/// this the kernel never offers FUSE_IOMAP and every "iomap" run would be classic.
/// `debug_iomap` makes the kernel check and report bad mappings from the server.
pub const IOMAP_PARAMS: &[&str] = &["fuse.enable_iomap=1", "fuse.debug_iomap=1"];

/// `[profiles.NAME.vm]` in harness.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmProfile {
    /// Kernel command-line words for every boot of this profile (e.g. `fuse.enable_uring=1`).
    #[serde(default)]
    pub append: Vec<String>,
}

/// The profile's `[vm]` section (empty when it has none).
pub fn vm_profile(profile: Option<&str>) -> Result<VmProfile> {
    let config = profile::HarnessConfig::load_default()?;
    Ok(config.profile(profile)?.section("vm")?.unwrap_or_default())
}

/// The extra command line: profile words, iomap parameters unless the kernel is known to
/// lack FUSE iomap (`kernel_iomap == Some(false)`; an unknown kernel gets them, and a
/// kernel without the parameters only logs them as unknown), then the user's words.
pub fn extra_cmdline(
    profile: &VmProfile,
    kernel_iomap: Option<bool>,
    user: &[String],
) -> Vec<String> {
    let iomap: &[&str] = if kernel_iomap == Some(false) {
        &[]
    } else {
        IOMAP_PARAMS
    };
    profile
        .append
        .iter()
        .cloned()
        .chain(iomap.iter().map(|s| s.to_string()))
        .chain(user.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iomap_is_enabled_unless_the_kernel_lacks_it() {
        let p = VmProfile {
            append: vec!["fuse.enable_uring=1".into()],
        };
        let user = vec!["loglevel=7".to_string()];
        assert_eq!(
            extra_cmdline(&p, Some(true), &user),
            [
                "fuse.enable_uring=1",
                "fuse.enable_iomap=1",
                "fuse.debug_iomap=1",
                "loglevel=7"
            ]
        );
        assert_eq!(extra_cmdline(&p, None, &[]).len(), 3);
        assert_eq!(
            extra_cmdline(&p, Some(false), &user),
            ["fuse.enable_uring=1", "loglevel=7"]
        );
    }

    #[test]
    fn every_profile_vm_section_parses() {
        let config = profile::HarnessConfig::load_default().unwrap();
        for name in config.profiles.keys() {
            vm_profile(Some(name)).unwrap_or_else(|e| panic!("profile {name}: {e:#}"));
        }
    }
}
