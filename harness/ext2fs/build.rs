// Link libext2fs dynamically (Debian's libext2fs-dev); the bindings themselves are committed.
fn main() {
    println!("cargo:rustc-link-lib=dylib=ext2fs");
    println!("cargo:rustc-link-lib=dylib=com_err");
}
