//! Parity with torchvision: random-weight resnet18/resnet50 with the CLISC
//! head, saved by `torch.save(state_dict)` in Python
//! (`tests/reference/make_reference.py`), loaded here by name; pooled
//! features, `layer3` activations, logits and LayerCAM must match in eval
//! mode. Reference files are generated on first use into
//! `${CLISC_CACHE_DIR:-~/.cache/clisc}/parity/resnet` and reused.

use clisc_cam::cam::{self, CamMethod};
use clisc_cam::classifier::{load_state_dict, load_torchvision_backbone, Classifier};
use clisc_cam::resnet::{Arch, Stage};
use clisc_nn::weights::WeightFile;
use std::path::PathBuf;
use tch::nn::ModuleT;
use tch::{Device, Tensor};

fn reference_dir() -> PathBuf {
    clisc_test_harness::Reference {
        crate_dir: env!("CARGO_MANIFEST_DIR"),
        name: "resnet",
        script: "tests/reference/make_reference.py",
        args: &[],
        files: &["resnet50-ref.pt"],
        needs: "torchvision",
    }
    .dir()
}

fn max_rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-6);
    (a - b).abs().max().double_value(&[]) / scale
}

fn check(arch: Arch) {
    let dir = reference_dir();
    let name = arch.name();
    let mut clf = Classifier::new(arch, Device::Cpu, 0);
    let copied =
        load_state_dict(&mut clf, &dir.join(format!("{name}.pth")), true).expect("load state dict");
    let expected = clf.vs.variables().len();
    assert_eq!(copied, expected, "every variable comes from the file");
    let file = WeightFile::open(&dir.join(format!("{name}-ref.pt"))).unwrap();
    let r = |k: &str| file.require(k).unwrap().to_kind(tch::Kind::Float);
    let x = &r("input");
    let (features, layer3, logits) = tch::no_grad(|| {
        let l3 = clf.net.run_stages(x, None, Stage::Layer3, false);
        (clf.net.features(x, false), l3, clf.net.forward_t(x, false))
    });
    let e_feat = max_rel_err(&features, &r("features"));
    let e_l3 = max_rel_err(&layer3, &r("layer3"));
    let e_logits = max_rel_err(&logits, &r("logits"));
    println!("{name}: max rel err features {e_feat:.2e}, layer3 {e_l3:.2e}, logits {e_logits:.2e}");
    assert!(
        e_feat < 1e-4 && e_l3 < 1e-4 && e_logits < 1e-4,
        "{name}: {e_feat} {e_l3} {e_logits}"
    );

    // LayerCAM through the batch code, on the same (3-channel) input.
    let (maps, _) = cam::compute_from_input(&clf, x, CamMethod::LayerCam, Stage::Layer3, 2);
    let e_cam = (maps - &r("layercam")).abs().max().double_value(&[]);
    println!("{name}: LayerCAM max abs err {e_cam:.2e}");
    assert!(e_cam < 1e-3, "{name}: LayerCAM differs by {e_cam}");

    // The plain torchvision file (1000-class fc) loads as a backbone.
    let mut fresh = Classifier::new(arch, Device::Cpu, 1);
    let n = load_torchvision_backbone(&mut fresh, &dir.join(format!("{name}-plain.pth"))).unwrap();
    assert_eq!(n, expected - 4, "all but the 4 head tensors");
    let f2 = tch::no_grad(|| fresh.net.features(x, false));
    assert!(max_rel_err(&f2, &r("features")) < 1e-4);
    // The CLISC file lacks nothing for the backbone, but another arch's file is refused by name.
    let mut wrong = Classifier::new(
        if arch == Arch::ResNet18 {
            Arch::ResNet34
        } else {
            Arch::ResNet18
        },
        Device::Cpu,
        0,
    );
    let err = load_torchvision_backbone(&mut wrong, &dir.join(format!("{name}.pth"))).unwrap_err();
    assert!(
        err.message.contains("does not match") && err.message.contains(name),
        "{}",
        err.message
    );
}

#[test]
fn resnet18_matches_torchvision() {
    check(Arch::ResNet18);
}

#[test]
fn resnet50_matches_torchvision() {
    check(Arch::ResNet50);
}
