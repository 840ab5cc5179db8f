//! Class activation maps of the tumor class, computed in batches.
//!
//! * **LayerCAM** (Jiang et al. 2021; CLISC uses it on `layer3`): at the
//!   target layer's activation `A` with gradient `G = d logit_tumor / dA`,
//!   the map is `ReLU(sum_k ReLU(G_k) * A_k)`.
//! * **Grad-CAM** (Selvaraju et al. 2017): channel weights are the
//!   spatial means of `G`; the map is `ReLU(sum_k mean(G_k) * A_k)`.
//! * **CAM** (Zhou et al. 2016): defined for a linear classifier on
//!   globally pooled `layer4` features, where it equals the classifier
//!   applied at every position. CLISC's head is a small MLP, so "CAM" here
//!   applies that head (eval mode) at every `layer4` position and maps the
//!   tumor-vs-normal logit difference (gradient-free). It always uses
//!   `layer4`, whatever the target layer.
//!
//! Every map is min-max normalised per slice (a constant map becomes 0) at
//! the feature resolution; callers upsample it bilinearly (`upsample`).
//! The activation before the target layer is computed without a graph;
//! only the layers after it are differentiated.

use crate::classifier::Classifier;
use crate::resnet::{ResNet, Stage};
use crate::slices::to_network_input;
use tch::{Device, Kind, Tensor};

/// The tumor class index of the two-class head.
pub const TUMOR: i64 = 1;

clisc_sdk::setting_choice! {
    /// Which activation map.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CamMethod {
        /// LayerCAM.
        LayerCam = "layercam",
        /// Grad-CAM.
        GradCam = "gradcam",
        /// Plain CAM on `layer4`.
        Cam = "cam",
    }
}

/// Per-sample min-max of `[N, H, W]` maps to `[0, 1]` (constant maps -> 0).
pub(crate) fn minmax_per_sample(maps: &Tensor) -> Tensor {
    let n = maps.size()[0];
    let flat = maps.reshape([n, -1]);
    let lo = flat.amin(1, true);
    let hi = flat.amax(1, true);
    let range = &hi - &lo;
    let safe = range.clamp_min(1e-12);
    let out = (flat - lo) / safe;
    out.where_self(&range.gt(0.0), &Tensor::zeros_like(&out))
        .reshape(maps.size())
}

/// Maps of one batch of network inputs `[B, 3, S, S]` (already on device),
/// plus the tumor probabilities of the batch.
fn batch_maps(net: &ResNet, x: &Tensor, method: CamMethod, layer: Stage) -> (Tensor, Tensor) {
    match method {
        CamMethod::Cam => tch::no_grad(|| {
            let l4 = net.run_stages(x, None, Stage::Layer4, false);
            let prob = net
                .head(&ResNet::pool(&l4), false)
                .softmax(-1, Kind::Float)
                .select(1, TUMOR);
            let per_pos = net.head_per_position(&l4);
            (
                per_pos.select(1, TUMOR) - per_pos.select(1, 1 - TUMOR),
                prob,
            )
        }),
        CamMethod::LayerCam | CamMethod::GradCam => {
            let a = tch::no_grad(|| net.run_stages(x, None, layer, false))
                .detach()
                .set_requires_grad(true);
            let l4 = net.run_stages(&a, Some(layer), Stage::Layer4, false);
            let logits = net.head(&ResNet::pool(&l4), false);
            let score = logits.select(1, TUMOR).sum(Kind::Float);
            let g = Tensor::run_backward(&[&score], &[&a], false, false).remove(0);
            let prob = logits.detach().softmax(-1, Kind::Float).select(1, TUMOR);
            let a = a.detach();
            let map = tch::no_grad(|| {
                if method == CamMethod::LayerCam {
                    (g.relu() * &a)
                        .sum_dim_intlist(1, false, Kind::Float)
                        .relu()
                } else {
                    let w = g.mean_dim(&[2i64, 3][..], true, Kind::Float);
                    (w * &a).sum_dim_intlist(1, false, Kind::Float).relu()
                }
            });
            (map, prob)
        }
    }
}

/// Min-max normalised maps `[N, h, w]` (feature resolution, on the CPU)
/// and tumor probabilities `[N]` of grey `[N, 1, S, S]` images in `[0, 1]`.
pub fn compute(
    clf: &Classifier,
    grey: &Tensor,
    method: CamMethod,
    layer: Stage,
    batch: usize,
) -> (Tensor, Tensor) {
    batched(grey, batch, |g| {
        batch_maps(&clf.net, &to_network_input(g, clf.device()), method, layer)
    })
}

/// Like [`compute`] for inputs already normalised for the network
/// (`[N, 3, S, S]`), e.g. to compare with a PyTorch reference.
pub fn compute_from_input(
    clf: &Classifier,
    x: &Tensor,
    method: CamMethod,
    layer: Stage,
    batch: usize,
) -> (Tensor, Tensor) {
    batched(x, batch, |b| {
        batch_maps(&clf.net, &b.to_device(clf.device()), method, layer)
    })
}

fn batched(xs: &Tensor, batch: usize, f: impl Fn(&Tensor) -> (Tensor, Tensor)) -> (Tensor, Tensor) {
    let n = xs.size()[0];
    let (mut maps, mut probs) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < n {
        let len = (batch.max(1) as i64).min(n - i);
        let (m, p) = f(&xs.narrow(0, i, len));
        maps.push(minmax_per_sample(&m).to_device(Device::Cpu));
        probs.push(p.to_device(Device::Cpu));
        i += len;
    }
    if maps.is_empty() {
        return (
            Tensor::zeros([0, 1, 1], (Kind::Float, Device::Cpu)),
            Tensor::zeros([0], (Kind::Float, Device::Cpu)),
        );
    }
    (Tensor::cat(&maps, 0), Tensor::cat(&probs, 0))
}

/// Bilinear upsampling (`align_corners = False`) of `[N, h, w]` maps to
/// `[N, height, width]`, clamped to `[0, 1]`.
pub(crate) fn upsample(maps: &Tensor, height: usize, width: usize) -> Tensor {
    maps.unsqueeze(1)
        .upsample_bilinear2d([height as i64, width as i64], false, None, None)
        .squeeze_dim(1)
        .clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resnet::Arch;

    #[test]
    fn minmax_handles_constant_maps() {
        let m = Tensor::from_slice(&[1.0f32, 3.0, 2.0, 2.0, 5.0, 5.0, 5.0, 5.0]).view([2, 2, 2]);
        let out = minmax_per_sample(&m);
        let v: Vec<f32> = Vec::try_from(out.flatten(0, -1)).unwrap();
        assert_eq!(v, vec![0.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn layercam_matches_a_hand_computation_and_all_methods_run() {
        let _torch_rng = crate::torch_rng_lock();
        let clf = Classifier::new(Arch::ResNet18, Device::Cpu, 7);
        let grey = Tensor::rand([3, 1, 64, 64], (Kind::Float, Device::Cpu));
        // Hand LayerCAM on the first image through autograd of the full graph.
        let x = to_network_input(&grey.narrow(0, 0, 1), Device::Cpu);
        let a = clf
            .net
            .run_stages(&x, None, Stage::Layer3, false)
            .detach()
            .set_requires_grad(true);
        let l4 = clf
            .net
            .run_stages(&a, Some(Stage::Layer3), Stage::Layer4, false);
        let logit = clf.net.head(&ResNet::pool(&l4), false).get(0).get(TUMOR);
        logit.backward();
        let hand = (a.grad().relu() * a.detach())
            .sum_dim_intlist(1, false, Kind::Float)
            .relu();
        let hand = minmax_per_sample(&hand);
        let (maps, probs) = compute(&clf, &grey, CamMethod::LayerCam, Stage::Layer3, 2);
        assert_eq!(maps.size(), [3, 4, 4]);
        assert_eq!(probs.size(), [3]);
        assert!(maps.narrow(0, 0, 1).allclose(&hand, 1e-4, 1e-5, false));
        for method in [CamMethod::GradCam, CamMethod::Cam] {
            let (m, _) = compute(&clf, &grey, method, Stage::Layer3, 2);
            let (lo, hi) = (m.min().double_value(&[]), m.max().double_value(&[]));
            assert!(lo >= 0.0 && hi <= 1.0, "{method:?}: {lo}..{hi}");
        }
        let up = upsample(&maps, 50, 70);
        assert_eq!(up.size(), [3, 50, 70]);
    }
}
