//! Lets the `clisc` binary find libtorch on its own, without
//! `scripts/env.sh` or `LD_LIBRARY_PATH`: the libtorch library folder that
//! torch-sys linked against (announced by its build script as
//! `DEP_TCH_LIBTORCH_LIB`) goes into the binary's run path. A binary
//! copied to another machine then needs libtorch at the same path, or
//! `LD_LIBRARY_PATH` pointing at one of the same version.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("windows") {
            println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
        }
    }
}
