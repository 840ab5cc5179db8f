//! Helpers for the tests of zero-shot models (this crate's and
//! `clisc-biomedclip`'s), compiled for this crate's tests and with the
//! `testing` feature.

use clisc_sdk::stage::CaseInput;
use clisc_sdk::{Grid, LabelVolume, Volume};
use tch::nn::VarStore;
use tch::Tensor;

/// Fills every variable of `vs` except `logit_scale` with deterministic
/// values in [-0.3, 0.3) (a fixed linear congruential sequence over the
/// variables sorted by name, not libtorch's global RNG: tests run in
/// parallel).
pub fn fill_deterministic(vs: &VarStore) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut v) in vars {
        if name == "logit_scale" {
            continue;
        }
        let values: Vec<f32> = (0..v.numel())
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
            })
            .collect();
        tch::no_grad(|| v.copy_(&Tensor::from_slice(&values).view(v.size().as_slice())));
    }
}

/// A 20 x 24 x `nz` case with a textured FLAIR channel, whose slices in
/// `empty` have no brain.
pub fn synthetic_case(nz: usize, empty: &[usize]) -> CaseInput {
    let grid = Grid::new([20, 24, nz as u32], [1.0; 3]);
    let data: Vec<f32> = (0..grid.len())
        .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
        .collect();
    let mut mask = vec![1u8; grid.len()];
    for &z in empty {
        mask[z * 480..(z + 1) * 480].iter_mut().for_each(|v| *v = 0);
    }
    CaseInput {
        id: "t".into(),
        image: Volume::single(grid, "flair", data),
        brain_mask: LabelVolume {
            grid,
            data: mask.into(),
        },
    }
}
