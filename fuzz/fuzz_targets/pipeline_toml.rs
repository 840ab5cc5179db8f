//! Text -> pipeline file validation against the built-in registry. Any
//! outcome but a panic or a hang is fine; a valid pipeline must print back
//! to TOML that validates again.
#![no_main]

use clisc_builtins as _;
use clisc_pipeline::config;
use clisc_registry::Registry;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::builtin)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/clisc-fuzz/pipeline.toml");
    let mut plugins = registry().clone();
    if let Ok(pipeline) = config::parse(path, text, &mut plugins) {
        let again = pipeline.to_toml();
        let mut plugins = registry().clone();
        if let Err(e) = config::parse(path, &again, &mut plugins) {
            panic!("a valid pipeline printed as\n{again}\ndoes not validate again: {e}");
        }
    }
});
