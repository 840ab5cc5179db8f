//! Loading external plugin libraries: the two example plugins side by side
//! (a pseudo-labeler and a promptable segmenter, used through the registry
//! like the pipeline runner uses them), a library built against an
//! incompatible SDK (refused, naming both versions) and a panicking plugin
//! (a clear error naming the plugin, the host keeps running).
//!
//! The example cdylibs are dev-dependencies of the host, so `cargo test`
//! builds them next to this test binary (`target/<profile>/deps/`).

mod example_plugins;

use abi_stable::std_types::{ROption, RVec};
use clisc_registry::loader::LoadError;
use clisc_registry::{Origin, Registry, RegistryError};
use clisc_sdk::stage::{CaseInput, SliceImage};
use clisc_sdk::{
    BoxXyxy, ErrorKind, Grid, HostContext, LabelVolume, PromptPoint, PromptSet, StageKind,
    StageObject, Volume, SDK_VERSION,
};
use example_plugins::example_library;

fn ctx() -> (tempfile::TempDir, HostContext) {
    let dir = tempfile::tempdir().unwrap();
    let ctx = HostContext::for_tests(dir.path().to_str().unwrap(), 1);
    (dir, ctx)
}

/// 12 x 10 x 4, brain everywhere, a bright 3x3 square on slices 1 and 2.
fn case() -> CaseInput {
    let grid = Grid::new([12, 10, 4], [1.0; 3]);
    let mut flair = vec![0f32; grid.len()];
    for z in 1..=2 {
        for y in 4..=6 {
            for x in 5..=7 {
                flair[grid.index(x, y, z)] = 5.0;
            }
        }
    }
    let mut brain = LabelVolume::zeros(grid);
    brain.data.iter_mut().for_each(|m| *m = 1);
    CaseInput {
        id: "c1".into(),
        image: Volume::single(grid, "flair", flair),
        brain_mask: brain,
    }
}

fn create(
    registry: &Registry,
    name: &str,
    kind: StageKind,
    settings: &str,
) -> Result<StageObject, RegistryError> {
    let table: toml::Table = toml::from_str(settings).unwrap();
    let resolved = registry.resolve_settings(name, kind, &table)?;
    let (_dir, ctx) = ctx();
    registry.create(name, kind, &resolved, &ctx)
}

#[test]
fn two_example_libraries_load_side_by_side_and_run() {
    let labeler = example_library("clisc-example-threshold-labeler");
    let segmenter = example_library("clisc-example-box-fill-segmenter");
    let registry = Registry::with_search_path(&[labeler.clone(), segmenter.clone()]).unwrap();
    let listing = clisc::commands::plugins::render_list(&registry, true);
    assert!(
        listing.contains("example-threshold") && listing.contains("example-box-fill"),
        "{listing}"
    );
    let found = registry
        .find("example-box-fill", StageKind::PromptableSegmenter)
        .unwrap();
    assert_eq!(
        found.origin,
        Origin::External(segmenter.canonicalize().unwrap())
    );

    // Labeler -> (box from the bright slices) -> segmenter, as the runner chains them.
    let case = case();
    let Ok(StageObject::PseudoLabeler(mut labeler)) = create(
        &registry,
        "example-threshold",
        StageKind::PseudoLabeler,
        "k = 2.0",
    ) else {
        panic!("example-threshold did not start")
    };
    let labels = labeler.label_slices(&case).unwrap();
    let positive: Vec<u32> = labels
        .slices
        .iter()
        .filter(|s| s.label == 1)
        .map(|s| s.index)
        .collect();
    assert_eq!(positive, vec![1, 2]);
    let Ok(StageObject::PromptableSegmenter(mut segmenter)) = create(
        &registry,
        "example-box-fill",
        StageKind::PromptableSegmenter,
        "k = 0.5",
    ) else {
        panic!("example-box-fill did not start")
    };
    for z in positive {
        let slice = SliceImage {
            case_id: case.id.clone(),
            index: z,
            image: case.image.axial_slice("flair", z as usize).unwrap(),
        };
        let prompt = PromptSet {
            slice: z,
            bbox: ROption::RSome(BoxXyxy {
                x0: 3.0,
                y0: 2.0,
                x1: 9.0,
                y1: 8.0,
            }),
            points: RVec::from(vec![PromptPoint {
                x: 6.0,
                y: 5.0,
                positive: true,
            }]),
        };
        let masks = segmenter
            .segment(&slice, vec![prompt].as_slice().into())
            .unwrap();
        let expected: Vec<u8> = slice
            .image
            .data
            .iter()
            .map(|&v| u8::from(v > 1.0))
            .collect();
        assert_eq!(masks[0].data.as_slice(), expected.as_slice(), "slice {z}");
    }
}

#[test]
fn a_library_built_against_an_incompatible_sdk_is_refused_naming_both_versions() {
    let lib = example_library("clisc-example-incompatible");
    let err = match Registry::with_search_path(std::slice::from_ref(&lib)) {
        Err(e) => e,
        Ok(_) => panic!("an SDK 1.0.0 library must be refused by an SDK {SDK_VERSION} host"),
    };
    match &err {
        RegistryError::Load(LoadError::IncompatibleSdk {
            plugin_sdk,
            host_sdk,
            ..
        }) => {
            assert_eq!(plugin_sdk, "1.0.0");
            assert_eq!(host_sdk, SDK_VERSION);
        }
        other => panic!("expected an SDK version error, got: {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("clisc-sdk 1.0.0"), "{message}");
    assert!(
        message.contains(&format!("clisc-sdk {SDK_VERSION}")),
        "{message}"
    );
    assert!(
        message.contains("libclisc_example_incompatible"),
        "the file must be named: {message}"
    );
}

#[test]
fn a_panicking_plugin_is_a_clear_error_and_the_host_keeps_going() {
    let registry =
        Registry::with_search_path(&[example_library("clisc-example-threshold-labeler")]).unwrap();
    let Ok(StageObject::PseudoLabeler(mut stage)) = create(
        &registry,
        "example-threshold",
        StageKind::PseudoLabeler,
        "panic_on_slice = 2",
    ) else {
        panic!("example-threshold did not start")
    };
    let case = case();
    let err = stage.label_slices(&case).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Panicked);
    let message = err.to_string();
    assert!(message.starts_with("plugin panicked"), "{message}");
    assert!(
        message.contains("example-threshold: deliberate panic on slice 2"),
        "{message}"
    );
    // The stage object is still usable after the caught panic, and the process is alive.
    assert!(stage.label_slices(&case).is_err());

    // Bad settings and constructor failures name the plugin (and, for a
    // constructor failure, the library it comes from).
    let err = create(
        &registry,
        "example-threshold",
        StageKind::PseudoLabeler,
        "panic_on_slic = 2",
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("settings of plugin `example-threshold`"),
        "{err}"
    );
    assert!(
        err.to_string().contains("unknown setting `panic_on_slic`"),
        "{err}"
    );
    let err = create(
        &registry,
        "example-threshold",
        StageKind::PromptableSegmenter,
        "",
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("plugin `example-threshold` is a pseudo-labeler"),
        "{err}"
    );
}
