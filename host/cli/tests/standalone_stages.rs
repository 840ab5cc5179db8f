//! `clisc sam` and `clisc clip` with external plugins, through the real
//! binary: the example cdylibs (`example-box-fill`, a promptable
//! segmenter; `example-threshold`, a pseudo-labeler) are found with
//! `--plugin-path` and reached only through the registry, exactly as the
//! built-in `sam` and `clip` are.
//!
//! The image: a 40 x 40 x 12 volume, zero outside a "brain" box (x, y in
//! 5..35, z in 2..10) of value 100, with a bright square (x 15..22,
//! y 18..25, z 5..8) of value 300. The non-zero box is what a stage sees,
//! so a correct answer also shows that prompts go into the stage's
//! coordinates and results come back to the image's.

mod example_plugins;

use clisc_sdk::{Grid, Volume};
use example_plugins::example_library;
use std::path::Path;
use std::process::{Command, Output};

const BRAIN: ([usize; 2], [usize; 2], [usize; 2]) = ([5, 35], [5, 35], [2, 10]);
const TUMOUR: ([usize; 2], [usize; 2], [usize; 2]) = ([15, 22], [18, 25], [5, 8]);
const SHAPE: [usize; 3] = [40, 40, 12];

fn inside(b: ([usize; 2], [usize; 2], [usize; 2]), x: usize, y: usize, z: usize) -> bool {
    (b.0[0]..b.0[1]).contains(&x) && (b.1[0]..b.1[1]).contains(&y) && (b.2[0]..b.2[1]).contains(&z)
}

fn write_image(path: &Path) {
    let [nx, ny, nz] = SHAPE;
    let mut data = vec![0f32; nx * ny * nz];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let v = if inside(TUMOUR, x, y, z) {
                    300.0
                } else if inside(BRAIN, x, y, z) {
                    100.0 + ((x * 7 + y * 3) % 5) as f32
                } else {
                    0.0
                };
                data[x + nx * (y + ny * z)] = v;
            }
        }
    }
    let grid = Grid::new(SHAPE.map(|s| s as u32), [1.0; 3]);
    let volume = Volume::single(grid, "flair", data);
    clisc_nifti::write_volume_channel(path, &volume, "flair", None).unwrap();
}

fn clisc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clisc"))
        .args(args)
        .env_remove("CLISC_PLUGIN_PATH")
        .output()
        .expect("running clisc")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `clisc COMMAND --plugin PLUGIN --plugin-path LIBRARY --image IMAGE REST...`.
fn with_plugin(command: &str, plugin: &str, library: &Path, image: &Path, rest: &[&str]) -> Output {
    let head = [
        command,
        "--plugin",
        plugin,
        "--plugin-path",
        library.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
    ];
    clisc(&[&head[..], rest].concat())
}

#[test]
fn clisc_sam_runs_an_external_promptable_segmenter() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("flair.nii.gz");
    write_image(&image);
    let out = dir.path().join("mask.nii.gz");
    let lib = example_library("clisc-example-box-fill-segmenter");
    let run = with_plugin(
        "sam",
        "example-box-fill",
        &lib,
        &image,
        &[
            "--slice",
            "6",
            "--box",
            "12,15,25,28",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let (mask, _) = clisc_nifti::read_labels(&out).unwrap();
    assert_eq!(mask.grid.shape, SHAPE.map(|s| s as u32));
    let [nx, ny, nz] = SHAPE;
    let mut wrong = Vec::new();
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let want = u8::from(z == 6 && inside(TUMOUR, x, y, z));
                if mask.data[x + nx * (y + ny * z)] != want {
                    wrong.push((x, y, z));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} voxels differ, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        text(&run.stdout).contains("49 pixels"),
        "{}",
        text(&run.stdout)
    );
}

#[test]
fn clisc_clip_runs_an_external_pseudo_labeler() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("flair.nii.gz");
    write_image(&image);
    let lib = example_library("clisc-example-threshold-labeler");
    let run = with_plugin("clip", "example-threshold", &lib, &image, &[]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    // One line per slice of the non-zero box, in the image's slice indices.
    let expected: String = (BRAIN.2[0]..BRAIN.2[1])
        .map(|z| {
            let label = u8::from((TUMOUR.2[0]..TUMOUR.2[1]).contains(&z));
            format!("{z}\t{label}\t1.000000\ttrue\n")
        })
        .collect();
    assert_eq!(text(&run.stdout), expected);

    let one = with_plugin(
        "clip",
        "example-threshold",
        &lib,
        &image,
        &["--slice", "6", "--set", "min_fraction = 0.5"],
    );
    assert!(one.status.success(), "{}", text(&one.stderr));
    assert_eq!(text(&one.stdout), "6\t0\t1.000000\ttrue\n");
}

#[test]
fn a_plugin_of_another_kind_or_missing_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("flair.nii.gz");
    write_image(&image);
    let out = dir.path().join("mask.png");
    let lib = example_library("clisc-example-threshold-labeler");
    let prompt_and_out = ["--box", "12,15,25,28", "--out", out.to_str().unwrap()];
    let wrong_kind = with_plugin("sam", "example-threshold", &lib, &image, &prompt_and_out);
    assert!(!wrong_kind.status.success());
    let stderr = text(&wrong_kind.stderr);
    assert!(
        stderr.contains("plugin `example-threshold` is a pseudo-labeler, but this stage needs a promptable-segmenter"),
        "{stderr}"
    );
    let missing = clisc(
        &[
            &[
                "sam",
                "--plugin",
                "example-box-fill",
                "--image",
                image.to_str().unwrap(),
            ][..],
            &prompt_and_out,
        ]
        .concat(),
    );
    assert!(!missing.status.success());
    let stderr = text(&missing.stderr);
    assert!(
        stderr.contains("no plugin named `example-box-fill`"),
        "{stderr}"
    );
    assert!(!out.exists(), "a failed run wrote {}", out.display());
}

#[test]
fn a_2d_image_is_one_slice() {
    let dir = tempfile::tempdir().unwrap();
    let [nx, ny, _] = SHAPE;
    let png = dir.path().join("slice.png");
    let pixels: Vec<u8> = (0..nx * ny)
        .map(|i| {
            let (x, y) = (i % nx, i / nx);
            if inside(TUMOUR, x, y, 6) {
                250
            } else if inside(BRAIN, x, y, 6) {
                90
            } else {
                0
            }
        })
        .collect();
    image::GrayImage::from_raw(nx as u32, ny as u32, pixels)
        .unwrap()
        .save(&png)
        .unwrap();
    let out = dir.path().join("mask.png");
    let lib = example_library("clisc-example-box-fill-segmenter");
    let run = with_plugin(
        "sam",
        "example-box-fill",
        &lib,
        &png,
        &["--pos", "18,21", "--out", out.to_str().unwrap()],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let mask = image::open(&out).unwrap().to_luma8();
    for (x, y, p) in mask.enumerate_pixels() {
        let want = if inside(TUMOUR, x as usize, y as usize, 6) {
            255
        } else {
            0
        };
        assert_eq!(p.0[0], want, "pixel ({x}, {y})");
    }
}

#[test]
fn the_binary_finds_libtorch_in_an_empty_environment() {
    // No LD_LIBRARY_PATH, no PATH, no CLISC_*: the run path written by
    // build.rs is all the binary has. Listing the plugins loads libtorch
    // (the built-in model crates link it).
    let out = Command::new(env!("CARGO_BIN_EXE_clisc"))
        .args(["plugins", "list"])
        .env_clear()
        .output()
        .expect("running clisc");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("unet3d"),
        "{}",
        text(&out.stdout)
    );
}
