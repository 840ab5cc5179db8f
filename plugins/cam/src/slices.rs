//! Slices as the classifier sees them, decoded once and kept in memory.
//!
//! A z-scored axial slice is min-max normalised to `[0, 1]` over the whole
//! slice (so the background, the minimum of a brain-cropped z-scored
//! volume, becomes 0), resized bilinearly to `size x size` and stored as one
//! grey channel. The three identical input channels and the ImageNet mean /
//! std normalisation torchvision weights expect are applied on the fly per
//! batch (`to_network_input`), so memory holds one float per pixel.

use clisc_imaging::intensity::min_max;
use clisc_imaging::resample::{resize_bilinear, resize_nearest};
use clisc_sdk::{LabelVolume, PluginError, Volume};
use tch::{Device, Kind, Tensor};

/// ImageNet channel means (torchvision's normalisation).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Min-max normalises one slice to `[0, 1]` (a constant slice becomes 0).
pub(crate) fn minmax_unit(values: &[f32]) -> Vec<f32> {
    let (lo, hi) = min_max(values);
    if hi > lo {
        let s = 1.0 / (hi - lo);
        values.iter().map(|v| (v - lo) * s).collect()
    } else {
        vec![0.0; values.len()]
    }
}

/// Axial slice `z` of a volume prepared for the network: min-max to
/// `[0, 1]`, resized to `size x size`; plus the brain mask resized with
/// nearest neighbour (1.0 inside the brain).
pub(crate) fn prepare_slice(
    flair: &[f32],
    brain: &[u8],
    dims: [usize; 3],
    z: usize,
    size: usize,
) -> (Vec<f32>, Vec<f32>) {
    let n = dims[0] * dims[1];
    let unit = minmax_unit(&flair[z * n..(z + 1) * n]);
    let img = resize_bilinear(&unit, dims[0], dims[1], size, size);
    let b = resize_nearest(&brain[z * n..(z + 1) * n], dims[0], dims[1], size, size);
    (
        img,
        b.into_iter()
            .map(|v| if v != 0 { 1.0 } else { 0.0 })
            .collect(),
    )
}

/// A set of prepared slices with labels: images `[N, 1, S, S]` in `[0, 1]`,
/// brain masks `[N, 1, S, S]` (0/1) and labels `[N]` (int64).
#[derive(Debug)]
pub struct SliceSet {
    /// Grey images.
    pub images: Tensor,
    /// Brain masks on the same pixels.
    pub brain: Tensor,
    /// Class per slice (1 = tumor).
    pub labels: Tensor,
    /// Side of the square images.
    pub size: usize,
}

impl SliceSet {
    /// Builds the set from flat buffers of `n` slices of `size x size`.
    pub(crate) fn from_parts(
        images: Vec<f32>,
        brain: Vec<f32>,
        labels: Vec<i64>,
        size: usize,
    ) -> Self {
        let n = labels.len() as i64;
        let s = size as i64;
        Self {
            images: Tensor::from_slice(&images).reshape([n, 1, s, s]),
            brain: Tensor::from_slice(&brain).reshape([n, 1, s, s]),
            labels: Tensor::from_slice(&labels),
            size,
        }
    }
    /// Number of slices.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }
    /// True when the set holds no slice.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of slices labelled 1.
    pub fn positives(&self) -> usize {
        self.labels.sum(Kind::Int64).int64_value(&[]) as usize
    }
    /// Concatenates two sets of the same image size.
    pub fn concat(&self, other: &SliceSet) -> SliceSet {
        SliceSet {
            images: Tensor::cat(&[&self.images, &other.images], 0),
            brain: Tensor::cat(&[&self.brain, &other.brain], 0),
            labels: Tensor::cat(&[&self.labels, &other.labels], 0),
            size: self.size,
        }
    }
    /// A cheap content fingerprint (for resuming checkpoints on the same data).
    pub fn fingerprint(&self) -> String {
        let sum = self.images.sum(Kind::Double).double_value(&[]);
        let weighted = (&self.images * self.labels.view([-1, 1, 1, 1]))
            .sum(Kind::Double)
            .double_value(&[]);
        format!(
            "n{}-p{}-s{}-{sum:.6e}-{weighted:.6e}",
            self.len(),
            self.positives(),
            self.size
        )
    }
}

/// Prepares every slice of `labelled` whose flag `kept` is set.
pub(crate) fn kept_slices(
    image: &Volume,
    brain: &LabelVolume,
    labels: &clisc_sdk::SlicePseudoLabels,
    size: usize,
    images: &mut Vec<f32>,
    masks: &mut Vec<f32>,
    classes: &mut Vec<i64>,
) -> Result<(), PluginError> {
    let flair = image.require_channel("flair")?;
    let dims = image.grid.dims();
    image.grid.check_len(brain.data.len(), "brain mask")?;
    for l in labels.slices.iter().filter(|l| l.kept) {
        let z = l.index as usize;
        if z >= dims[2] {
            return Err(PluginError::input(format!(
                "slice label index {z} is outside the volume ({} slices)",
                dims[2]
            )));
        }
        let (img, b) = prepare_slice(flair, &brain.data, dims, z, size);
        images.extend_from_slice(&img);
        masks.extend_from_slice(&b);
        classes.push(i64::from(l.label != 0));
    }
    Ok(())
}

/// Turns grey `[N, 1, S, S]` images in `[0, 1]` into the network's input:
/// three identical channels normalised with ImageNet mean / std, on `device`.
pub(crate) fn to_network_input(grey: &Tensor, device: Device) -> Tensor {
    let mean = Tensor::from_slice(&IMAGENET_MEAN)
        .view([1, 3, 1, 1])
        .to_device(device);
    let std = Tensor::from_slice(&IMAGENET_STD)
        .view([1, 3, 1, 1])
        .to_device(device);
    let x = grey.to_device(device).to_kind(Kind::Float);
    (x.expand([-1, 3, -1, -1], false) - mean) / std
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_unit_range_and_resized() {
        // 4x2 slice, two slices; slice 1 has a ramp.
        let dims = [4, 2, 2];
        let mut flair = vec![-1.0f32; 8];
        flair.extend([-1.0, 0.0, 1.0, 3.0, -1.0, 0.0, 1.0, 3.0]);
        let brain = vec![1u8; 16];
        let (img, b) = prepare_slice(&flair, &brain, dims, 1, 8);
        assert_eq!(img.len(), 64);
        assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(img.contains(&0.0) && img.iter().any(|&v| (v - 1.0).abs() < 1e-6));
        assert!(b.iter().all(|&v| v == 1.0));
        let (flat, _) = prepare_slice(&flair, &brain, dims, 0, 8);
        assert!(flat.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn network_input_is_imagenet_normalised() {
        let grey = Tensor::from_slice(&[0.0f32, 1.0]).view([2, 1, 1, 1]);
        let x = to_network_input(&grey, Device::Cpu);
        assert_eq!(x.size(), [2, 3, 1, 1]);
        let v = x.double_value(&[1, 2, 0, 0]);
        assert!((v - (1.0 - 0.406) / 0.225).abs() < 1e-5);
    }
}
