//! `clisc plugins new`: scaffolds a ready-to-build external plugin crate.
//!
//! The crate is a `cdylib` (what `clisc` loads at run time, plus an `rlib`
//! so its unit tests link) that depends only on `clisc-sdk` and
//! `abi_stable`, with a small but working implementation of the chosen
//! stage kind and a unit test. It declares its own `[workspace]` so it
//! builds wherever it is created, also inside another Cargo workspace.

use clisc_sdk::StageKind;
use std::fmt;
use std::path::{Path, PathBuf};

/// What to scaffold.
#[derive(Debug, Clone)]
pub struct ScaffoldOptions {
    /// Plugin name (also the crate name): lower case, digits and `-`.
    pub name: String,
    /// Stage kind to implement.
    pub kind: StageKind,
    /// Folder to create (must not exist or be empty).
    pub dir: PathBuf,
    /// The `clisc-sdk` crate to depend on (a path); `None` = this checkout's `sdk/`.
    pub sdk_path: Option<PathBuf>,
}

/// Why scaffolding failed.
#[derive(Debug)]
pub enum ScaffoldError {
    /// The plugin name cannot be a crate and plugin name.
    BadName(String),
    /// The target folder exists and is not empty.
    NotEmpty(PathBuf),
    /// No `clisc-sdk` crate at the given or default path.
    NoSdk(PathBuf),
    /// Writing a file failed.
    Io(PathBuf, std::io::Error),
}

impl fmt::Display for ScaffoldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaffoldError::BadName(n) => write!(
                f,
                "plugin name {n:?} must start with a lower-case letter and contain only a-z, 0-9 and '-' (e.g. \"my-labeler\")"
            ),
            ScaffoldError::NotEmpty(d) => write!(f, "{} already exists and is not empty; choose another --dir", d.display()),
            ScaffoldError::NoSdk(p) => write!(
                f,
                "no clisc-sdk crate at {} (expected its Cargo.toml there); pass --sdk-path PATH/TO/clisc/sdk",
                p.display()
            ),
            ScaffoldError::Io(p, e) => write!(f, "cannot write {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ScaffoldError {}

/// The files written by [`scaffold`].
#[derive(Debug, Clone)]
pub struct Scaffolded {
    /// The crate folder.
    pub dir: PathBuf,
    /// The shared library `cargo build` produces, relative to the crate's
    /// target folder (`debug/` or `release/`), e.g. `libmy_labeler.so`.
    pub library_file: String,
    /// The SDK path written into `Cargo.toml`.
    pub sdk_path: PathBuf,
}

/// Arguments of `clisc plugins new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// Plugin name, also the crate name (e.g. `my-labeler`).
    pub name: String,
    /// Stage kind to implement.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(StageKind::ALL.map(|k| k.as_str())))]
    pub kind: String,
    /// Folder to create (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The clisc-sdk crate to depend on (default: this checkout's sdk/).
    #[arg(long = "sdk-path")]
    pub sdk_path: Option<PathBuf>,
}

/// Runs `clisc plugins new` and prints the next steps.
pub fn run(args: NewArgs) -> anyhow::Result<()> {
    let kind = parse_kind(&args.kind)
        .ok_or_else(|| anyhow::anyhow!("unknown stage kind {:?}", args.kind))?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let out = scaffold(&ScaffoldOptions {
        name: args.name.clone(),
        kind,
        dir,
        sdk_path: args.sdk_path,
    })?;
    println!(
        "created {} plugin `{}` in {}",
        kind,
        args.name,
        out.dir.display()
    );
    println!("  depends on clisc-sdk at {}", out.sdk_path.display());
    println!("next:");
    println!(
        "  cd {} && cargo test && cargo build --release",
        out.dir.display()
    );
    println!(
        "  clisc plugins list --plugin-path {}",
        out.dir.join("target/release").display()
    );
    Ok(())
}

/// The `sdk/` folder of the checkout this binary was built from.
pub(crate) fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk")
}

/// The `[stages.KEY]` table a plugin of `kind` goes into (a prompt
/// generator may also serve as `reprompt_generator`).
fn stage_key(kind: StageKind) -> String {
    kind.as_str().replace('-', "_")
}

/// Parses a kind name as written in pipelines (`pseudo-labeler`, ...).
pub(crate) fn parse_kind(s: &str) -> Option<StageKind> {
    StageKind::ALL.into_iter().find(|k| k.as_str() == s)
}

fn template(kind: StageKind) -> &'static str {
    match kind {
        StageKind::PseudoLabeler => include_str!("scaffold/templates/pseudo-labeler.rs.in"),
        StageKind::RoiExtractor => include_str!("scaffold/templates/roi-extractor.rs.in"),
        StageKind::PromptGenerator => include_str!("scaffold/templates/prompt-generator.rs.in"),
        StageKind::PromptableSegmenter => {
            include_str!("scaffold/templates/promptable-segmenter.rs.in")
        }
        StageKind::VolumetricSegmenter => {
            include_str!("scaffold/templates/volumetric-segmenter.rs.in")
        }
        StageKind::Filter => include_str!("scaffold/templates/filter.rs.in"),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// `my-labeler` -> `MyLabeler`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The platform's file name of the shared library of crate `name`.
pub fn library_file_name(name: &str) -> String {
    let stem = name.replace('-', "_");
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Creates the plugin crate described by `opts`.
pub fn scaffold(opts: &ScaffoldOptions) -> Result<Scaffolded, ScaffoldError> {
    if !valid_name(&opts.name) {
        return Err(ScaffoldError::BadName(opts.name.clone()));
    }
    let sdk = opts.sdk_path.clone().unwrap_or_else(default_sdk_path);
    if !sdk.join("Cargo.toml").is_file() {
        return Err(ScaffoldError::NoSdk(sdk));
    }
    let sdk = sdk
        .canonicalize()
        .map_err(|e| ScaffoldError::Io(sdk.clone(), e))?;
    let dir = &opts.dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(ScaffoldError::NotEmpty(dir.clone()));
    }
    let ty = type_name(&opts.name);
    let lib = template(opts.kind)
        .replace("{{NAME}}", &opts.name)
        .replace("{{TYPE}}", &ty);
    let sdk_toml = toml::Value::String(sdk.display().to_string()).to_string();
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
description = "A clisc {kind} plugin"
publish = false

[lib]
# cdylib: the shared library clisc loads; rlib: lets `cargo test` link it.
crate-type = ["cdylib", "rlib"]

[dependencies]
clisc-sdk = {{ path = {sdk_toml} }}
# The version clisc-sdk uses; `export_plugins!` needs it directly.
abi_stable = "0.11.3"

# A standalone crate, even when created inside another Cargo workspace.
[workspace]
"#,
        name = opts.name,
        kind = opts.kind,
    );
    let library = library_file_name(&opts.name);
    let readme = format!(
        r#"# {name}

A clisc {kind} plugin, scaffolded by `clisc plugins new {name} --kind {kind}`.
The example implementation in `src/lib.rs` is small but works; replace it
with your model.

```sh
cargo test                      # the unit test of the example
cargo build --release           # -> target/release/{library}
clisc plugins list --plugin-path target/release
```

Use it in a pipeline:

```toml
[plugins]
paths = ["{dir}/target/release/{library}"]

[stages.{stage}]
plugin = "{name}"
```

See docs/plugins.md in the clisc repository for the contract.
"#,
        name = opts.name,
        kind = opts.kind,
        dir = dir.display(),
        stage = stage_key(opts.kind),
    );
    let write = |rel: &str, text: &str| -> Result<(), ScaffoldError> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ScaffoldError::Io(parent.to_path_buf(), e))?;
        }
        std::fs::write(&path, text).map_err(|e| ScaffoldError::Io(path, e))
    };
    write("Cargo.toml", &cargo)?;
    write("src/lib.rs", &lib)?;
    write("README.md", &readme)?;
    write(".gitignore", "/target\n")?;
    Ok(Scaffolded {
        dir: dir.clone(),
        library_file: library,
        sdk_path: sdk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types() {
        assert!(valid_name("my-labeler2"));
        for bad in ["My", "1x", "a_b", "a-", "a--b", ""] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(type_name("my-box-seg"), "MyBoxSeg");
        assert_eq!(
            parse_kind("promptable-segmenter"),
            Some(StageKind::PromptableSegmenter)
        );
        assert_eq!(parse_kind("segmenter"), None);
    }

    #[test]
    fn writes_a_crate_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = ScaffoldOptions {
            name: "my-filter".into(),
            kind: StageKind::Filter,
            dir: tmp.path().join("my-filter"),
            sdk_path: None,
        };
        let out = scaffold(&opts).unwrap();
        let lib = std::fs::read_to_string(out.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct MyFilterPlugin;") && lib.contains("\"my-filter\""));
        assert!(!lib.contains("{{"), "unreplaced placeholder");
        let readme = std::fs::read_to_string(out.dir.join("README.md")).unwrap();
        assert!(
            readme.contains("[stages.filter]\nplugin = \"my-filter\""),
            "{readme}"
        );
        let cargo: toml::Table =
            toml::from_str(&std::fs::read_to_string(out.dir.join("Cargo.toml")).unwrap()).unwrap();
        let sdk = cargo["dependencies"]["clisc-sdk"]["path"].as_str().unwrap();
        assert!(Path::new(sdk).join("Cargo.toml").is_file());
        assert!(matches!(scaffold(&opts), Err(ScaffoldError::NotEmpty(_))));
        let bad_sdk = ScaffoldOptions {
            sdk_path: Some(tmp.path().into()),
            dir: tmp.path().join("x"),
            ..opts
        };
        assert!(scaffold(&bad_sdk)
            .unwrap_err()
            .to_string()
            .contains("--sdk-path"));
    }
}
