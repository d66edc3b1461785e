//! Compiles the C shims: the variadic exec functions (stable Rust cannot define
//! C-variadic functions) and the glibc FILE field access of stdio.rs.
fn main() {
    cc::Build::new()
        .file("csrc/shim.c")
        .warnings(true)
        .compile("gkfs_preload_shim");
    println!("cargo:rerun-if-changed=csrc/shim.c");
}
