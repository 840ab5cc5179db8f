//! The example plugin cdylibs (`plugins/examples/*`), which are
//! dev-dependencies of this crate, so `cargo test` builds them next to the
//! test binaries (`target/<profile>/deps/`).

use clisc::scaffold::library_file_name;
use std::path::PathBuf;

/// The built library of example crate `crate_name`.
pub fn example_library(crate_name: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let path = deps.join(library_file_name(crate_name));
    assert!(
        path.is_file(),
        "{} was not built (it is a dev-dependency of the CLI crate)",
        path.display()
    );
    path
}
