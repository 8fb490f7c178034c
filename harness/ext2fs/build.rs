// Link libext2fs dynamically; the bindings themselves are committed. By soname
// (libext2fs.so.2, libcom_err.so.2: what the binary needs at run time anyway), so
// building needs only the runtime libraries every Debian has (libext2fs2, libcom-err2),
// not libext2fs-dev: `cargo xtask setup` itself links this crate, before it can install
// anything.
fn main() {
    println!("cargo:rustc-link-lib=dylib:+verbatim=libext2fs.so.2");
    println!("cargo:rustc-link-lib=dylib:+verbatim=libcom_err.so.2");
}
