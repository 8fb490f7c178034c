//! The pieces of `cargo xtask` that are CLI glue rather than domain logic: the `kernel`
//! subcommand's report printing and the bindgen regeneration. The domain logic lives in
//! the harness/ crates (kernel, guest-image, fstests, runner, bisect, bench, hostsetup).

pub mod bindgen;
pub mod kernel_cmd;
