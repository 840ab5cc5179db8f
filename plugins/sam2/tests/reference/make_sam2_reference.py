"""Reference outputs of the official SAM 2.1 code (PyPI `sam2` 1.1.0) for
the Rust parity tests of `clisc-sam2`.

The model is SAM 2.1 Hiera-tiny at full size, built from the config that
ships inside the package (`configs/sam2.1/sam2.1_hiera_t.yaml`), with
seeded random weights, saved as the official checkpoints are
(`torch.save({"model": state_dict})`, like `sam2.1_hiera_tiny.pt`).

* Image mode: `SAM2ImagePredictor` (as built by `build_sam2`, with its
  dynamic multimask fallback) on one grey slice, for three prompt sets.
* Propagation: `build_sam2_video_predictor` on a volume of 20 slices
  (the frames of a video); boxes on slices 9 and 15 (plus points on 9),
  `propagate_in_video` forward from 9, then in reverse from 9. The frames
  are handed over losslessly: the video loader is replaced by the image
  predictor's transform of each 8-bit slice (no JPEG). The hole filling
  the video predictor asks for (`fill_hole_area=8`) needs the CUDA
  extension; on CPU its connected components are computed here with
  scipy (8-connectivity, as the kernel), so the reference fills holes as
  the GPU build does.

With `medsam2`, the model is MedSAM2's architecture instead
(`sam2.1_hiera_t512.yaml` in its repository: SAM 2.1 Hiera-tiny at 512
pixels with two memory-attention layers), built from the package's tiny
config with those three overrides, saved as `MedSAM2_random.pt`; the
volume has 12 slices prompted on 5 and 9.

Two more variants run at 256 pixels (any multiple of 32 works; small
inputs keep the reference quick): `sam2_hiera_t`, the July 2024 SAM 2
(no temporal encoding of object pointers, no "no object" memory), prompted
with one click on slice 0; `sam2.1_hiera_b+`, the base+ trunk (two heads,
another background embedding) with its occlusion head biased so that the
prompted slices lose the object and the tracked ones keep it.

`sam2.1_hiera_t-cap2`: tiny at 256 pixels, slices 2, 6 and 9 of 12
prompted, each tracked slice attending to the nearest two
(`max_cond_frames_in_attn=2`).

Usage: python make_sam2_reference.py OUT_DIR [sam2.1_hiera_t | medsam2 | sam2_hiera_t | sam2.1_hiera_b+ | sam2.1_hiera_t-cap2]
"""

import os
import sys

import numpy as np
import scipy.ndimage
import torch

import sam2.sam2_video_predictor as video_module
import sam2.utils.misc as misc
from sam2.build_sam import build_sam2, build_sam2_video_predictor
from sam2.sam2_image_predictor import SAM2ImagePredictor

SEED = 20250412
H, W = 200, 240
BOX_AND_CLICKS = ([[110, 100], [125, 100], [30, 30]], [1, 1, 0], [70, 65, 155, 135])
BOX_ONLY = (None, None, [85, 70, 175, 130])
ONE_CLICK = ([[112, 98]], [1], None)


def small(size):
    """Overrides for a smaller input (RoPE grids follow the input)."""
    grid = size // 16
    return [
        f"++model.image_size={size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
    ]


# Per variant: config inside the package, hydra overrides, checkpoint name,
# slices, prompts per slice (the first prompted slice starts the tracking),
# bias of the occlusion head's output.
VARIANTS = {
    "sam2.1_hiera_t": dict(
        config="configs/sam2.1/sam2.1_hiera_t.yaml", overrides=[],
        checkpoint="sam2.1_hiera_tiny_random.pt", frames=20,
        prompts={9: BOX_AND_CLICKS, 15: BOX_ONLY}, obj_bias=1.0),
    # MedSAM2 (sam2.1_hiera_t512.yaml): 512 px, two memory-attention layers.
    "medsam2": dict(
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        overrides=small(512) + ["++model.memory_attention.num_layers=2"],
        checkpoint="MedSAM2_random.pt", frames=12,
        prompts={5: BOX_AND_CLICKS, 9: BOX_ONLY}, obj_bias=1.0),
    # SAM 2 (July 2024) at 256 px: no pointer time encoding, no "no object"
    # memory embedding; a single click on the first slice (multimask on a
    # conditioning frame, no backward pass).
    "sam2_hiera_t": dict(
        config="configs/sam2/sam2_hiera_t.yaml", overrides=small(256),
        checkpoint="sam2_hiera_tiny_random.pt", frames=10,
        prompts={0: ONE_CLICK, 6: BOX_ONLY}, obj_bias=1.0),
    # SAM 2.1 base+ at 256 px (two heads, 14 x 14 background embedding);
    # the occlusion head biased so that the prompted slices lose the
    # object (no-object pointer and memory) and the tracked ones keep it.
    "sam2.1_hiera_b+": dict(
        config="configs/sam2.1/sam2.1_hiera_b+.yaml", overrides=small(256),
        checkpoint="sam2.1_hiera_base_plus_random.pt", frames=10,
        prompts={3: BOX_AND_CLICKS, 7: BOX_ONLY}, obj_bias=-0.1),
    # SAM 2.1 tiny at 256 px, three prompted slices of which a tracked one
    # attends to the nearest two (`max_cond_frames_in_attn=2`).
    "sam2.1_hiera_t-cap2": dict(
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        overrides=small(256) + ["++model.max_cond_frames_in_attn=2"],
        checkpoint="sam2.1_hiera_tiny_random.pt", frames=12,
        prompts={2: BOX_AND_CLICKS, 6: BOX_ONLY, 9: ONE_CLICK}, obj_bias=1.0),
}
VARIANT = VARIANTS[sys.argv[2] if len(sys.argv) > 2 else "sam2.1_hiera_t"]
CONFIG, OVERRIDES = VARIANT["config"], VARIANT["overrides"]
CHECKPOINT, FRAMES = VARIANT["checkpoint"], VARIANT["frames"]
PROMPT_FRAMES = tuple(VARIANT["prompts"])

# Image-mode prompt sets: (points, labels, box, multimask_output).
IMAGE_PROMPTS = [
    (None, None, [60, 50, 170, 150], False),
    ([[115, 100], [100, 95], [130, 105], [20, 20], [220, 180]], [1, 1, 1, 0, 0], [70, 60, 160, 140], False),
    ([[115, 100]], [1], None, True),
]


def randomise(model: torch.nn.Module, gen: torch.Generator, obj_bias: float) -> None:
    """Parameters the official init leaves constant (biases, norms,
    positional embeddings, layer scales) get small random values, which
    would otherwise hide wiring mistakes; the rest keep the official
    random init."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or t.numel() < 2:
                continue
            if float(t.std()) > 0:
                continue
            if float(t.flatten()[0]) == 1.0:
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
            elif name.endswith("gamma"):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.02 * torch.randn(t.shape, generator=gen))
        # With random weights the occlusion head says "no object" on every
        # frame, which would blank every propagated mask (NO_OBJ_SCORE):
        # bias it towards "object present".
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(obj_bias)


def slice_image(k: int) -> np.ndarray:
    """An 8-bit grey slice: smooth background, a bright ellipse moving
    and growing with the slice index, noise."""
    rng = np.random.default_rng(SEED + k)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = 50 + 40 * np.sin(xx / 31.0 + k / 7.0) * np.cos(yy / 17.0)
    r = 0.6 + 0.4 * np.sin(np.pi * k / (FRAMES - 1))
    img += 120 * ((((xx - 100 - 2 * k) / (40 * r)) ** 2 + ((yy - 100) / (30 * r)) ** 2) < 1)
    img += rng.normal(0, 6, img.shape)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.round(img).astype(np.uint8)


def rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[:, :, None], 3, axis=2)


def connected_components(mask: torch.Tensor):
    """The CUDA kernel's contract: per pixel of (N, 1, H, W) the label
    and the area of its 8-connected component (0 on background)."""
    labels = torch.zeros(mask.shape, dtype=torch.int32)
    counts = torch.zeros(mask.shape, dtype=torch.int32)
    for n in range(mask.shape[0]):
        lab, _ = scipy.ndimage.label(mask[n, 0].cpu().numpy().astype(bool), structure=np.ones((3, 3)))
        area = np.bincount(lab.ravel())
        cnt = area[lab]
        cnt[lab == 0] = 0
        labels[n, 0] = torch.from_numpy(lab.astype(np.int32))
        counts[n, 0] = torch.from_numpy(cnt.astype(np.int32))
    return labels, counts


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = build_sam2(CONFIG, ckpt_path=None, device="cpu", hydra_overrides_extra=OVERRIDES)
    randomise(model, gen, VARIANT["obj_bias"])
    model.eval()
    ckpt = os.path.join(out, CHECKPOINT)
    torch.save({"model": model.state_dict()}, ckpt + ".tmp")

    ref = {}
    # --- image mode ---
    predictor = SAM2ImagePredictor(model)
    # The image predictor hard-codes the feature sizes of a 1024-pixel input.
    size = model.image_size
    predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
    image = slice_image(PROMPT_FRAMES[0])
    ref["image"] = torch.from_numpy(image)
    with torch.no_grad():
        predictor.set_image(rgb(image))
        ref["image.input"] = predictor._transforms(rgb(image))
        ref["image.embed"] = predictor._features["image_embed"]
        ref["image.high_res_0"] = predictor._features["high_res_feats"][0]
        ref["image.high_res_1"] = predictor._features["high_res_feats"][1]
        for i, (points, labels, box, multimask) in enumerate(IMAGE_PROMPTS):
            pts = None if points is None else np.array(points, dtype=np.float32)
            lab = None if labels is None else np.array(labels, dtype=np.int32)
            bx = None if box is None else np.array(box, dtype=np.float32)
            logits, iou, low = predictor.predict(pts, lab, bx, multimask_output=multimask, return_logits=True)
            ref[f"prompt{i}.points"] = torch.tensor(points if points else [], dtype=torch.float32).reshape(-1, 2)
            ref[f"prompt{i}.labels"] = torch.tensor(labels if labels else [], dtype=torch.int64)
            ref[f"prompt{i}.box"] = torch.tensor(box if box else [], dtype=torch.float32)
            ref[f"prompt{i}.multimask"] = torch.tensor([int(multimask)])
            ref[f"prompt{i}.logits"] = torch.from_numpy(logits)
            ref[f"prompt{i}.iou"] = torch.from_numpy(iou)
            ref[f"prompt{i}.low_res"] = torch.from_numpy(low)

    # --- propagation through a volume ---
    misc.get_connected_components = connected_components
    video = build_sam2_video_predictor(CONFIG, ckpt_path=None, device="cpu", hydra_overrides_extra=OVERRIDES)
    video.load_state_dict(model.state_dict())
    video.eval()
    slices = [slice_image(k) for k in range(FRAMES)]
    frames = torch.stack([predictor._transforms(rgb(s)) for s in slices])
    ref["volume"] = torch.from_numpy(np.stack(slices))
    ref["volume.frames"] = frames
    video_module.load_video_frames = lambda **_: (frames, H, W)
    as_array = lambda v, t: None if v is None else np.array(v, t)  # noqa: E731
    video_prompts = {
        k: (as_array(p, np.float32), as_array(l, np.int32), as_array(b, np.float32))
        for k, (p, l, b) in VARIANT["prompts"].items()
    }
    with torch.inference_mode():
        state = video.init_state(video_path="frames-in-memory")
        for k, (pts, lab, box) in video_prompts.items():
            _, _, masks = video.add_new_points_or_box(state, frame_idx=k, obj_id=1, points=pts, labels=lab, box=box)
            ref[f"cond{k}.points"] = torch.from_numpy(pts if pts is not None else np.zeros((0, 2), np.float32))
            ref[f"cond{k}.labels"] = torch.from_numpy((lab if lab is not None else np.zeros(0, np.int32)).astype(np.int64))
            ref[f"cond{k}.box"] = torch.from_numpy(box if box is not None else np.zeros(0, np.float32))
            ref[f"cond{k}.logits"] = masks[0, 0].clone()
        for reverse in (False, True):
            tag = "backward" if reverse else "forward"
            for k, _, masks in video.propagate_in_video(state, start_frame_idx=PROMPT_FRAMES[0], reverse=reverse):
                ref[f"{tag}{k}.logits"] = masks[0, 0].clone()
    torch.save(ref, os.path.join(out, "reference.pt"))
    os.replace(ckpt + ".tmp", ckpt)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
