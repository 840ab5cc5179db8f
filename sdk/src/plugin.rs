//! Plugin identity, construction, built-in registration and the root
//! module of external plugin libraries.

use crate::config::{ConfigField, Settings};
use crate::error::{panic_to_error, PluginError};
use crate::progress::ProgressSinkBox;
use crate::stage::StageObject;
use abi_stable::library::RootModule;
use abi_stable::std_types::{RResult, RStr, RString, RVec};
use abi_stable::{
    declare_root_module_statics, package_version_strings, sabi_types::VersionStrings, StableAbi,
};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The stage families of a CLISC pipeline.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageKind {
    /// Volume -> per-slice tumor / no-tumor labels.
    PseudoLabeler,
    /// Labelled slices -> activation maps and ROIs.
    RoiExtractor,
    /// ROI -> boxes and points.
    PromptGenerator,
    /// Slice + prompts -> 2D mask.
    PromptableSegmenter,
    /// Trainable 3D segmenter.
    VolumetricSegmenter,
    /// Pseudo-label quality scoring and selection.
    Filter,
}

impl StageKind {
    /// All kinds, in pipeline order.
    pub const ALL: [StageKind; 6] = [
        StageKind::PseudoLabeler,
        StageKind::RoiExtractor,
        StageKind::PromptGenerator,
        StageKind::PromptableSegmenter,
        StageKind::VolumetricSegmenter,
        StageKind::Filter,
    ];
    /// Kebab-case name used in TOML and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::PseudoLabeler => "pseudo-labeler",
            StageKind::RoiExtractor => "roi-extractor",
            StageKind::PromptGenerator => "prompt-generator",
            StageKind::PromptableSegmenter => "promptable-segmenter",
            StageKind::VolumetricSegmenter => "volumetric-segmenter",
            StageKind::Filter => "filter",
        }
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who a plugin is and which settings it takes.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// Unique name used in pipeline files (`flair-intensity`, `sam`, ...).
    pub name: RString,
    /// Stage family.
    pub kind: StageKind,
    /// The plugin's own version.
    pub version: RString,
    /// One-line description.
    pub description: RString,
    /// The settings schema.
    pub settings: RVec<ConfigField>,
}

/// Run-wide facts a stage is constructed with.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct HostContext {
    /// Resolved device: `cpu` or `cuda:N` (never `auto`).
    pub device: RString,
    /// Seed for everything random in this stage.
    pub seed: u64,
    /// Threads the stage may use.
    pub threads: u32,
    /// A folder private to this stage instance (checkpoints, caches).
    pub work_dir: RString,
    /// Where progress and log lines go.
    pub progress: ProgressSinkBox,
}

impl HostContext {
    /// A CPU context with a silent progress sink, for tests and tools.
    pub fn for_tests(work_dir: &str, seed: u64) -> Self {
        Self {
            device: "cpu".into(),
            seed,
            threads: 1,
            work_dir: work_dir.into(),
            progress: crate::progress::Silent::boxed(),
        }
    }
}

/// Everything the host needs to list and construct a plugin.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct PluginDescriptor {
    /// Identity and settings schema.
    pub info: PluginInfo,
    /// Builds a stage from its resolved settings (TOML text); never unwinds.
    pub create:
        extern "C" fn(settings: RStr<'_>, ctx: &HostContext) -> RResult<StageObject, PluginError>,
}

/// The Rust-side way to write a plugin: implement this, then register it
/// with [`register_builtin!`](crate::register_builtin) or export it with
/// [`export_plugins!`](crate::export_plugins).
pub trait Plugin: 'static {
    /// Unique name used in pipeline files.
    const NAME: &'static str;
    /// Stage family.
    const KIND: StageKind;
    /// Plugin version (usually `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// One-line description.
    const DESCRIPTION: &'static str;
    /// The settings schema.
    fn settings() -> Vec<ConfigField>;
    /// Builds the stage from validated settings.
    fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError>;
}

/// The descriptor of plugin `P`.
pub fn descriptor<P: Plugin>() -> PluginDescriptor {
    PluginDescriptor {
        info: PluginInfo {
            name: P::NAME.into(),
            kind: P::KIND,
            version: P::VERSION.into(),
            description: P::DESCRIPTION.into(),
            settings: P::settings().into(),
        },
        create: create_guarded::<P>,
    }
}

extern "C" fn create_guarded<P: Plugin>(
    settings: RStr<'_>,
    ctx: &HostContext,
) -> RResult<StageObject, PluginError> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let settings = Settings::parse(P::NAME, settings.as_str(), &P::settings())?;
        let stage = P::create(settings, ctx)?;
        if stage.kind() != P::KIND {
            return Err(PluginError::internal(format!(
                "plugin `{}` declares kind {} but built a {}",
                P::NAME,
                P::KIND,
                stage.kind()
            )));
        }
        Ok(stage)
    }));
    match result {
        Ok(r) => r.into(),
        Err(payload) => RResult::RErr(panic_to_error(payload)),
    }
}

/// A plugin compiled into the host, collected with `inventory`.
pub struct BuiltinPlugin {
    /// Produces the plugin's descriptor.
    pub descriptor: fn() -> PluginDescriptor,
}

inventory::collect!(BuiltinPlugin);

/// Every built-in plugin linked into this binary.
pub fn builtin_plugins() -> Vec<PluginDescriptor> {
    inventory::iter::<BuiltinPlugin>
        .into_iter()
        .map(|b| (b.descriptor)())
        .collect()
}

/// Registers plugin types as built-ins of the binary that links this crate.
#[macro_export]
macro_rules! register_builtin {
    ($($plugin:ty),+ $(,)?) => {
        $(
            $crate::inventory::submit! {
                $crate::plugin::BuiltinPlugin { descriptor: $crate::plugin::descriptor::<$plugin> }
            }
        )+
    };
}

/// The root module an external plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginLibraryRef)))]
#[sabi(missing_field(panic))]
pub struct PluginLibrary {
    /// The SDK version the library was built against.
    pub sdk_version: RStr<'static>,
    /// The plugins the library provides.
    #[sabi(last_prefix_field)]
    pub plugins: extern "C" fn() -> RVec<PluginDescriptor>,
}

impl RootModule for PluginLibraryRef {
    declare_root_module_statics! {PluginLibraryRef}
    const BASE_NAME: &'static str = "clisc_plugin";
    const NAME: &'static str = "clisc_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Exports plugin types from a `cdylib` crate so `clisc` can load it.
/// The crate must also depend on `abi_stable` directly.
#[macro_export]
macro_rules! export_plugins {
    ($($plugin:ty),+ $(,)?) => {
        #[$crate::abi_stable::export_root_module]
        pub fn clisc_plugin_library() -> $crate::plugin::PluginLibraryRef {
            extern "C" fn plugins() -> $crate::abi_stable::std_types::RVec<$crate::PluginDescriptor> {
                vec![$($crate::plugin::descriptor::<$plugin>()),+].into()
            }
            $crate::abi_stable::prefix_type::PrefixTypeTrait::leak_into_prefix(
                $crate::plugin::PluginLibrary {
                    sdk_version: $crate::abi_stable::std_types::RStr::from_str($crate::SDK_VERSION),
                    plugins,
                },
            )
        }
    };
}
