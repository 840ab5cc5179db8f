"""Reference outputs of torchvision ResNets for the Rust parity test.

Usage: make_reference.py OUT_DIR

For resnet18 and resnet50 (torchvision, random weights, seed fixed) the
ImageNet `fc` is replaced by the CLISC head
Sequential(Linear(F, 256), ReLU(), Dropout(0.5), Linear(256, 2)); BatchNorm
running statistics are randomised so eval mode differs from train mode.
Writes, per architecture:
  <arch>.pth          torch.save(model.state_dict())
  <arch>-plain.pth    the same backbone with torchvision's own 1000-class fc
  <arch>-ref.pt       torch.save({"input", "features", "layer3", "logits", "layercam"})
"""
import os
import sys

import torch
import torchvision


def build(arch, seed):
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    feats = model.fc.in_features
    model.fc = torch.nn.Sequential(
        torch.nn.Linear(feats, 256), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(256, 2)
    )
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    for k in plain:
        if not k.startswith("fc."):
            plain[k] = model.state_dict()[k].clone()
    return model.eval(), plain


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for i, arch in enumerate(["resnet18", "resnet50"]):
        model, plain = build(arch, 100 + i)
        torch.save(model.state_dict(), os.path.join(out, f"{arch}.pth"))
        torch.save(plain, os.path.join(out, f"{arch}-plain.pth"))
        x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
        acts = {}
        model.layer3.register_forward_hook(lambda m, inp, o: acts.__setitem__("layer3", o))
        with torch.no_grad():
            body = torch.nn.Sequential(*list(model.children())[:-1])
            features = torch.flatten(body(x), 1)
        logits = model(x)
        a = acts["layer3"]
        (grad,) = torch.autograd.grad(logits[:, 1].sum(), a)
        cam = torch.relu((torch.relu(grad) * a).sum(1))
        flat = cam.flatten(1)
        lo, hi = flat.min(1, keepdim=True)[0], flat.max(1, keepdim=True)[0]
        cam = ((flat - lo) / (hi - lo)).view_as(cam)
        ref = {
            "input": x,
            "features": features,
            "layer3": a.detach(),
            "logits": logits.detach(),
            "layercam": cam.detach(),
        }
        torch.save(ref, os.path.join(out, f"{arch}-ref.pt"))
        print(arch, "logits", logits.detach().numpy().round(4).tolist())


if __name__ == "__main__":
    main()
