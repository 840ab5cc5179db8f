//! `clisc infer` segments a new volume with a model trained by a pipeline,
//! and its output overlays the input exactly: the same grid and affine as
//! the input, whatever the input's geometry (oblique, anisotropic,
//! translated), and a volume embedded in a larger zero-padded field of
//! view gets the same labels at the same world positions.
use clisc_sdk::Grid;
use clisc_tests::{infer_nifti, write_tiny_dataset};
use std::path::{Path, PathBuf};
use std::process::Command;

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

/// Pseudo-labels, CAM, prompts, pseudo-masks and one small 3D U-Net.
fn write_pipeline(dir: &Path) -> PathBuf {
    let text = r#"
[run]
output = "work"
device = "cpu"
seed = 5
threads = 1

[dataset]
root = "data"
modalities = ["flair"]
split = { ratios = [4.0, 1.0, 2.0], seed = 3 }

# The tiny lesions span 6 slices; the reference's z-smoothing (which needs
# more than 8 kept neighbours) would vote such short runs away.
[stages.pseudo_labeler]
plugin = "flair-intensity"
settings = { smoothing = false }

[stages.roi_extractor]
plugin = "cam"
settings = { arch = "resnet18", input_size = 32, epochs = 1, batch_size = 16, amda_rounds = 0, gate_classifier = false, threshold = "otsu" }

[stages.prompt_generator]
plugin = "box-points"
settings = { box_dilation = 2 }

[stages.promptable_segmenter]
plugin = "classic-prompt"

[stages.volumetric_segmenter]
plugin = "unet3d"
settings = { features = [4, 8], patch_size = [16, 16, 16], batch_size = 2, iterations = 300, loss = "dice_ce", foreground_fraction = 0.5, window_batch = 8 }
"#;
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn clisc(args: &[&str]) {
    let out = Command::new(CLI)
        .args(args)
        .output()
        .expect("running clisc");
    assert!(
        out.status.success(),
        "clisc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An oblique, anisotropic, translated affine for `shape`.
fn oblique(shape: [u32; 3]) -> Grid {
    let (c, s) = (0.3f64.cos(), 0.3f64.sin());
    let spacing = [0.9, 1.1, 2.0];
    let rot = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
    let mut affine = [[0.0; 4]; 4];
    for (r, row) in rot.iter().enumerate() {
        for (k, v) in row.iter().enumerate() {
            affine[r][k] = v * spacing[k];
        }
    }
    affine[0][3] = -31.5;
    affine[1][3] = 12.25;
    affine[2][3] = -7.0;
    affine[3][3] = 1.0;
    Grid {
        shape,
        spacing,
        affine,
    }
}

/// `grid` grown by `pad` voxels on the low side of every axis and `pad_hi`
/// on the high side, with the affine moved so that old voxels keep their
/// world positions.
fn padded(grid: &Grid, pad: [u32; 3], pad_hi: [u32; 3]) -> Grid {
    let mut g = *grid;
    for d in 0..3 {
        g.shape[d] += pad[d] + pad_hi[d];
    }
    for r in 0..3 {
        g.affine[r][3] -= (0..3)
            .map(|k| grid.affine[r][k] * f64::from(pad[k]))
            .sum::<f64>();
    }
    g
}

/// The geometry a test input was written with.
fn grid_of(input: &Path, small: &Grid, big: &Grid) -> Grid {
    if input.ends_with("big.nii.gz") {
        *big
    } else {
        *small
    }
}

#[test]
fn infer_output_overlays_the_input_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_tiny_dataset(&root.join("data"), 7, [40, 40, 24]);
    let config = write_pipeline(root);
    clisc(&["run", "--config", config.to_str().unwrap()]);
    let model = root.join("work/05-network-1/model.ckpt");
    assert!(model.is_file(), "no model at {}", model.display());

    // A case given a new, oblique geometry, and the same voxels embedded in
    // a larger zero-padded field of view.
    let source = clisc_nifti::read(
        &root.join("data/BraTS20_Training_003/BraTS20_Training_003_flair.nii.gz"),
    )
    .unwrap();
    let grid = oblique(source.grid.shape);
    let (pad, pad_hi) = ([5u32, 3, 2], [2u32, 6, 1]);
    let big = padded(&grid, pad, pad_hi);
    let [nx, ny, nz] = grid.dims();
    let [bx, by, _] = big.dims();
    let big_index = |x: usize, y: usize, z: usize| {
        (x + pad[0] as usize) + bx * ((y + pad[1] as usize) + by * (z + pad[2] as usize))
    };
    let mut big_data = vec![0f32; big.len()];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                big_data[big_index(x, y, z)] = source.data[grid.index(x, y, z)];
            }
        }
    }
    let (small_in, big_in) = (root.join("small.nii.gz"), root.join("big.nii.gz"));
    clisc_nifti::write_f32(&small_in, &grid, &source.data, None).unwrap();
    clisc_nifti::write_f32(&big_in, &big, &big_data, None).unwrap();

    let (small_out, big_out) = (root.join("small-seg.nii.gz"), root.join("big-seg.nii.gz"));
    for (input, out) in [(&small_in, &small_out), (&big_in, &big_out)] {
        infer_nifti(CLI, &model, input, out);
    }
    let small_seg = clisc_nifti::read(&small_out).unwrap();
    let big_seg = clisc_nifti::read(&big_out).unwrap();
    // The output's geometry is the input file's, as stored (float32 affine).
    for (input, seg) in [(&small_in, &small_seg), (&big_in, &big_seg)] {
        let stored = clisc_nifti::read(input).unwrap().grid;
        assert_eq!(seg.grid.shape, stored.shape);
        assert_eq!(
            seg.grid.affine,
            stored.affine,
            "output affine differs from {}",
            input.display()
        );
        assert!(clisc_nifti::same_geometry(
            &stored,
            &grid_of(input, &grid, &big),
            1e-4
        ));
    }

    // Same labels at the same world positions, nothing in the padding,
    // nothing outside the brain, and a real segmentation of the lesion.
    let truth =
        clisc_nifti::read(&root.join("data/BraTS20_Training_003/BraTS20_Training_003_seg.nii.gz"))
            .unwrap();
    let mut inside = 0usize;
    let (mut tp, mut pred, mut gt) = (0usize, 0usize, 0usize);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = grid.index(x, y, z);
                assert_eq!(
                    small_seg.data[i],
                    big_seg.data[big_index(x, y, z)],
                    "voxel ({x}, {y}, {z})"
                );
                let p = small_seg.data[i] > 0.0;
                if p {
                    assert!(
                        source.data[i] != 0.0,
                        "label outside the brain at ({x}, {y}, {z})"
                    );
                }
                let t = truth.data[i] > 0.0;
                inside += usize::from(p);
                tp += usize::from(p && t);
                pred += usize::from(p);
                gt += usize::from(t);
            }
        }
    }
    let total: usize = big_seg.data.iter().filter(|&&v| v > 0.0).count();
    assert_eq!(total, inside, "labels in the zero padding");
    let dice = 2.0 * tp as f64 / (pred + gt) as f64;
    assert!(
        dice > 0.5,
        "Dice {dice:.3} of the inferred lesion (pred {pred}, truth {gt})"
    );
}
