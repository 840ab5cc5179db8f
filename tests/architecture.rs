//! The crate layout's rules (docs/architecture.md), read from
//! `cargo metadata` so that a new dependency that breaks one fails here:
//!
//! * the SDK (`sdk/`) depends on no other clisc crate but the SDK's own;
//! * a plugin crate (`plugins/`) never depends on a host crate (`host/`);
//! * a host crate reaches plugins only through the registry: of the crates
//!   under `plugins/` it may depend on `clisc-nn` (the registry asks
//!   libtorch how many GPUs there are) and, for the CLI alone,
//!   `clisc-builtins` (which links the built-in plugins);
//! * nothing depends on the CLI crate (`clisc`) but tests;
//! * the shared test support (`clisc-test-harness`, `tests/harness/`)
//!   depends on no clisc crate, and only crates under `tests/` have it as
//!   a normal dependency (others as a dev-dependency);
//! * no library crate of the host is over 6,000 lines, the CLI crate over
//!   4,000 (model crates under `plugins/` are exempt: one model family
//!   each).

use serde_json::Value;
use std::path::{Path, PathBuf};

/// A workspace crate: package name, folder relative to the workspace root,
/// and its normal and build dependencies on other workspace crates.
struct Crate {
    name: String,
    folder: PathBuf,
    /// Workspace crates it depends on (not dev-dependencies).
    depends_on: Vec<String>,
    /// Other crates it depends on (not dev-dependencies).
    external: Vec<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn workspace_crates() -> Vec<Crate> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = workspace_root();
    let packages = meta["packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .map(|p| {
            let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap());
            let folder = manifest
                .parent()
                .unwrap()
                .strip_prefix(&root)
                .unwrap()
                .to_path_buf();
            let (depends_on, external) = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().unwrap().to_string())
                .partition(|n| names.contains(&n.as_str()));
            Crate {
                name: p["name"].as_str().unwrap().to_string(),
                folder,
                depends_on,
                external,
            }
        })
        .collect()
}

fn folder_of<'a>(crates: &'a [Crate], name: &str) -> &'a Path {
    &crates.iter().find(|c| c.name == name).unwrap().folder
}

/// Lines of Rust under a crate's `src/`.
fn source_lines(folder: &Path) -> usize {
    fn walk(dir: &Path, total: &mut usize) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, total);
            } else if path.extension().is_some_and(|e| e == "rs") {
                *total += std::fs::read_to_string(&path).unwrap().lines().count();
            }
        }
    }
    let mut total = 0;
    walk(&workspace_root().join(folder).join("src"), &mut total);
    total
}

/// The plugin-to-plugin edges the layout accepts, each for a reason:
/// libtorch helpers, the crate that links the built-ins, and model
/// families that reuse a parent model's parts as their official code does.
fn plugin_edge_allowed(from: &str, to: &str) -> bool {
    match (from, to) {
        // Device, weight files and pickle reading for every model crate.
        (_, "clisc-nn") => true,
        // Its one job: link every built-in plugin crate.
        ("clisc-builtins", _) => true,
        // SAM 2 reuses SAM's prompt encoder, MLP and LayerNorm2d, as
        // Meta's sam2 package reuses segment-anything's.
        ("clisc-sam2", "clisc-sam") => true,
        // BiomedCLIP labels slices with CLIP's zero-shot labeller and
        // tokenizer clean-up, as open_clip shares them.
        ("clisc-biomedclip", "clisc-clip") => true,
        // CLIP's labeller smooths slice probabilities along z with the
        // same smoothing as the weight-free `flair-intensity` labeller.
        ("clisc-clip", "clisc-weight-free") => true,
        _ => false,
    }
}

#[test]
fn dependencies_point_down_the_layers() {
    let crates = workspace_crates();
    let mut problems = Vec::new();
    for c in &crates {
        for dep in &c.depends_on {
            let dep_folder = folder_of(&crates, dep);
            if c.folder.starts_with("sdk") && !dep_folder.starts_with("sdk") {
                problems.push(format!(
                    "{} (SDK) depends on {dep} ({})",
                    c.name,
                    dep_folder.display()
                ));
            }
            if c.folder.starts_with("plugins") && dep_folder.starts_with("host") {
                problems.push(format!(
                    "plugin crate {} depends on host crate {dep}",
                    c.name
                ));
            }
            if c.folder.starts_with("host") && dep_folder.starts_with("plugins") {
                let allowed = dep == "clisc-nn" || (dep == "clisc-builtins" && c.name == "clisc");
                if !allowed {
                    problems.push(format!(
                        "host crate {} depends on plugin crate {dep} (reach stages through the registry)",
                        c.name
                    ));
                }
            }
            if c.folder.starts_with("plugins")
                && dep_folder.starts_with("plugins")
                && !plugin_edge_allowed(&c.name, dep)
            {
                problems.push(format!(
                    "plugin crate {} depends on plugin crate {dep}: plugins share code through \
                     clisc-imaging or clisc-nn; add the edge to `plugin_edge_allowed` only with its reason",
                    c.name
                ));
            }
            if dep == "clisc" && c.name != "clisc-tests" {
                problems.push(format!("{} depends on the CLI crate `clisc`", c.name));
            }
            if dep == "clisc-test-harness" && !c.folder.starts_with("tests") {
                problems.push(format!(
                    "{} depends on the test harness outside [dev-dependencies]",
                    c.name
                ));
            }
            if c.name == "clisc-test-harness" {
                problems.push(format!("the test harness depends on {dep}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `pub` says "another crate uses this": every library crate denies (via
/// clippy's `-D warnings`) a `pub` item its crate root does not export, so
/// what is `pub` inside a private module is written `pub(crate)`.
#[test]
fn every_library_warns_on_unreachable_pub() {
    let missing: Vec<String> = workspace_crates()
        .into_iter()
        .map(|c| workspace_root().join(&c.folder).join("src/lib.rs"))
        .filter(|lib| lib.exists())
        .filter(|lib| {
            !std::fs::read_to_string(lib)
                .unwrap()
                .lines()
                .any(|l| l.trim() == "#![warn(unreachable_pub)]")
        })
        .map(|lib| lib.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "library crates without #![warn(unreachable_pub)]: {}",
        missing.join(", ")
    );
}

/// Libraries return typed errors (`thiserror`) that callers can match on;
/// `anyhow` is for the CLI, which only prints them.
#[test]
fn only_the_cli_uses_anyhow() {
    let users: Vec<String> = workspace_crates()
        .into_iter()
        .filter(|c| c.external.iter().any(|d| d == "anyhow"))
        .filter(|c| c.name != "clisc" && !c.folder.starts_with("tests"))
        .map(|c| format!("{} ({})", c.name, c.folder.display()))
        .collect();
    assert!(
        users.is_empty(),
        "library crates depending on anyhow (give them a thiserror type): {}",
        users.join(", ")
    );
}

#[test]
fn the_layers_exist_where_the_rules_expect_them() {
    // The rules above are only as good as the folders they read: a crate
    // moved elsewhere would escape them.
    let crates = workspace_crates();
    let folder = |name: &str| folder_of(&crates, name).to_path_buf();
    assert_eq!(folder("clisc-sdk"), Path::new("sdk"));
    assert_eq!(folder("clisc"), Path::new("host/cli"));
    assert!(folder("clisc-pipeline").starts_with("host"));
    assert_eq!(folder("clisc-test-harness"), Path::new("tests/harness"));
    for c in &crates {
        let top = c.folder.components().next().unwrap().as_os_str();
        assert!(
            ["sdk", "host", "plugins", "tests"].contains(&top.to_str().unwrap()),
            "{} lives in {}, outside sdk/, host/, plugins/ and tests/",
            c.name,
            c.folder.display()
        );
    }
    let plugin_crates = crates
        .iter()
        .filter(|c| c.folder.starts_with("plugins"))
        .count();
    assert!(
        plugin_crates >= 5,
        "only {plugin_crates} crates under plugins/"
    );
}

#[test]
fn non_model_crates_stay_small() {
    // Model crates (one model family each) may grow with their model; the
    // rest have one job and stay readable: the CLI under 4000 lines,
    // every other host, SDK and shared plugin crate under 6000.
    const MODEL_CRATES: [&str; 7] = [
        "clisc-clip",
        "clisc-biomedclip",
        "clisc-sam",
        "clisc-sam2",
        "clisc-cam",
        "clisc-unet3d",
        "clisc-builtins",
    ];
    let crates = workspace_crates();
    let mut problems = Vec::new();
    let checked: Vec<_> = crates
        .iter()
        .filter(|c| {
            (c.folder.starts_with("host")
                || c.folder.starts_with("sdk")
                || c.folder.starts_with("plugins"))
                && !c.folder.starts_with("plugins/examples")
                && !MODEL_CRATES.contains(&c.name.as_str())
        })
        .collect();
    // host (14), sdk and imaging, nn, adapters, weight-free.
    assert!(checked.len() >= 18, "only {} crates checked", checked.len());
    for c in checked {
        let limit = if c.name == "clisc" { 4000 } else { 6000 };
        let lines = source_lines(&c.folder);
        if lines > limit {
            problems.push(format!(
                "{} ({}) has {lines} lines of Rust in src/, over {limit}",
                c.name,
                c.folder.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
