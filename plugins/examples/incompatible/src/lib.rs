//! Test fixture for SDK versioning: a plugin library whose root module
//! says it was built against `clisc-sdk` 1.0.0, a major version this host
//! (0.x) is not compatible with. Loading it must fail with a message naming
//! both SDK versions, before any of its plugins is touched.
//!
//! It writes the root module by hand (instead of `export_plugins!`, which
//! always declares the SDK it is compiled with) to simulate a library built
//! against a future SDK.
#![warn(unreachable_pub)]

use abi_stable::export_root_module;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RStr, RVec};
use clisc_sdk::plugin::{PluginLibrary, PluginLibraryRef};
use clisc_sdk::PluginDescriptor;

/// The SDK version this fixture claims to be built against.
pub const CLAIMED_SDK_VERSION: &str = "1.0.0";

/// No plugins: the host must refuse the library before asking for them.
extern "C" fn plugins() -> RVec<PluginDescriptor> {
    RVec::new()
}

/// The root module, declaring SDK [`CLAIMED_SDK_VERSION`].
#[export_root_module]
pub fn clisc_plugin_library() -> PluginLibraryRef {
    PluginLibrary {
        sdk_version: RStr::from_str(CLAIMED_SDK_VERSION),
        plugins,
    }
    .leak_into_prefix()
}
