"""A tiny random-weight CLIP in OpenAI's format, and reference slice
probabilities computed with OpenAI's own code (`clip` from clip-anytorch),
for tests/clip_pipeline.rs.

    $CLISC_PYTHON tiny_clip.py make OUT.pt
        Builds `clip.model.CLIP` with ViT-B/32's patch size and input size
        but 2 layers of width 64 in both towers (1 attention head each:
        width / 64, what `clip.model.build_model` infers), seeded random
        weights everywhere, converts it to fp16 with
        `clip.model.convert_weights` and saves it traced as a TorchScript
        archive (`encode_image`, `encode_text`, `forward`), as OpenAI's
        `ViT-B-32.pt` is.

    $CLISC_PYTHON tiny_clip.py reference MODEL.pt INPUT.json OUT.json
        Loads MODEL.pt with `clip.load(path, device="cpu", jit=False)` (the
        official path: state dict of the archive -> `build_model` -> fp32)
        and, for every slice listed in INPUT.json, does what the `clip`
        pseudo-labeler documents: per-slice min-max of the float slice to
        8 bits (round half away from zero), a grey PIL image (row = y,
        column = x), CLIP's own preprocessing from `clip.load`, and the
        softmax over the logits of [normal prompt, abnormal prompt].
        INPUT.json: {"prompts": [normal, abnormal], "slices_file": F,
        "slices": [{"case": id, "z": k, "width": nx, "height": ny}, ...]},
        F holding the slices' f32 values (little-endian) one after the
        other. OUT.json: the P(abnormal) of each slice, in order.
"""
import json
import sys

import numpy as np
import torch
import clip
from clip.model import CLIP, convert_weights
from PIL import Image

SEED = 20251126


def make(out):
    torch.manual_seed(SEED)
    model = CLIP(
        embed_dim=32,
        image_resolution=224,
        vision_layers=2,
        vision_width=64,
        vision_patch_size=32,
        context_length=77,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=2,
    ).eval()
    # Random values everywhere: the built-in init leaves LayerNorms at 1/0
    # and biases at 0, which would hide mistakes in those parameters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            if p.dim() == 1:
                centre = 1.0 if name.endswith(".weight") else 0.0
                p.copy_(torch.randn_like(p) * 0.1 + centre)
    convert_weights(model)  # fp16, like the official release
    images = torch.randn(1, 3, 224, 224).half()
    tokens = clip.tokenize(["a tiny model"])
    with torch.no_grad():
        traced = torch.jit.trace_module(
            model,
            {"encode_image": images, "encode_text": tokens, "forward": (images, tokens)},
            check_trace=False,
        )
    traced.save(out)


def to_u8(values):
    """The plugin's per-slice min-max to 8 bits (f32 arithmetic, Rust's round)."""
    v = values.astype(np.float32)
    lo, hi = v.min(), v.max()
    if not hi > lo:
        return np.zeros(v.shape, np.uint8)
    scale = np.float32(255.0) / (hi - lo)
    x = (v - lo) * scale  # f32, as in the plugin
    return np.clip(np.floor(x.astype(np.float64) + 0.5), 0, 255).astype(np.uint8)


def reference(model_path, input_path, out_path):
    torch.set_num_threads(1)
    model, preprocess = clip.load(model_path, device="cpu", jit=False)
    model.eval()
    spec = json.load(open(input_path))
    data = np.fromfile(spec["slices_file"], dtype="<f4")
    images = []
    offset = 0
    for s in spec["slices"]:
        w, h = s["width"], s["height"]
        values = data[offset : offset + w * h].reshape(h, w)
        offset += w * h
        images.append(preprocess(Image.fromarray(to_u8(values))))
    assert offset == data.size, "slices file size"
    tokens = clip.tokenize(spec["prompts"])
    with torch.no_grad():
        logits, _ = model(torch.stack(images), tokens)
        probs = logits.softmax(dim=-1)[:, 1]
    json.dump([float(p) for p in probs], open(out_path, "w"))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "reference":
        reference(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
