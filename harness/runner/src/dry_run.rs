//! `vm-test --dry-run`: the QEMU command line a run would use, without building, booting or
//! creating anything. The kernel is the profile's last build if there is one; otherwise
//! its path is a placeholder and whether it has FUSE iomap follows the profile's `iomap`
//! (`required` builds only a kernel that has it).

use anyhow::Result;

use crate::vm_test::{spec_from_flags, AccelArg, ShareArg, VmTestArgs};
use kernel::{BuiltKernel, IomapMode, KernelOptions};
use plumbing::ui::Ui;

pub fn main(args: &VmTestArgs, ui: &Ui) -> Result<()> {
    let vm = &args.vm;
    let (kernel, kernel_iomap, about) = match &vm.kernel_image {
        Some(p) => (
            p.clone(),
            None,
            "--kernel-image (config unknown)".to_string(),
        ),
        None => {
            let opts = KernelOptions::resolve(vm.profile.as_deref(), &vm.kernel)?;
            match BuiltKernel::load(&kernel::latest_dir(&opts.profile)) {
                Ok(k) => (
                    k.vmlinux.clone(),
                    Some(k.info.iomap_present),
                    format!(
                        "the last build of profile `{}` ({})",
                        opts.profile, k.info.kernel_release
                    ),
                ),
                Err(_) => (
                    format!("<kernel of profile {}: not built yet>", opts.profile).into(),
                    match opts.iomap {
                        IomapMode::Required => Some(true),
                        IomapMode::Off => Some(false),
                        IomapMode::Auto => None,
                    },
                    format!(
                        "profile `{}` (not built yet; iomap = {:?})",
                        opts.profile, opts.iomap
                    ),
                ),
            }
        }
    };
    let recipe =
        guest_image::Recipe::load(&plumbing::paths::workspace_root().join("images"), &vm.image)?;
    let accel = match vm.accel {
        AccelArg::Kvm => vm::Accel::Kvm,
        AccelArg::Auto | AccelArg::Tcg => vm::Accel::Tcg,
    };
    let image = recipe.image_path(&plumbing::paths::cache_dir());
    let spec = vm::VmSpec {
        agent: "<run>/boot/agent".into(),
        virtiofs_server: args
            .virtiofs
            .then(|| crate::vm_test::target_dir().join("release").join("iomapfs")),
        // What a run would use, installing nothing: virtio-fs as root unless --share 9p
        // (or auto with --kernel-image).
        share: if vm.share == ShareArg::NineP
            || (vm.share == ShareArg::Auto && vm.kernel_image.is_some())
            || !nix::unistd::geteuid().is_root()
        {
            vm::RunShare::NineP
        } else {
            vm::RunShare::Virtiofsd(
                hostsetup::tools::VIRTIOFSD
                    .path()
                    .unwrap_or_else(|| "virtiofsd".into()),
            )
        },
        ..spec_from_flags(vm, kernel, kernel_iomap, image, accel)?
    };
    ui.step(format!("dry run: kernel from {about}"));
    if matches!(vm.accel, AccelArg::Auto) {
        ui.note("--accel auto: KVM if its boot probe passes at run time, TCG (shown) otherwise");
    }
    let argv = vm::run::planned_command(&spec);
    println!(
        "{}",
        shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
    );
    Ok(())
}
