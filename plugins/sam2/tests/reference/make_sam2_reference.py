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

Usage: python make_sam2_reference.py OUT_DIR [sam2.1_hiera_t | medsam2]
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
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
H, W = 200, 240
# Per variant: hydra overrides of the tiny config, checkpoint name, slices,
# prompted slices.
VARIANTS = {
    "sam2.1_hiera_t": ([], "sam2.1_hiera_tiny_random.pt", 20, (9, 15)),
    "medsam2": (
        [
            "++model.image_size=512",
            "++model.memory_attention.num_layers=2",
            "++model.memory_attention.layer.self_attention.feat_sizes=[32,32]",
            "++model.memory_attention.layer.cross_attention.feat_sizes=[32,32]",
        ],
        "MedSAM2_random.pt",
        12,
        (5, 9),
    ),
}
VARIANT = sys.argv[2] if len(sys.argv) > 2 else "sam2.1_hiera_t"
OVERRIDES, CHECKPOINT, FRAMES, PROMPT_FRAMES = VARIANTS[VARIANT]

# Image-mode prompt sets: (points, labels, box, multimask_output).
IMAGE_PROMPTS = [
    (None, None, [60, 50, 170, 150], False),
    ([[115, 100], [100, 95], [130, 105], [20, 20], [220, 180]], [1, 1, 1, 0, 0], [70, 60, 160, 140], False),
    ([[115, 100]], [1], None, True),
]


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
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
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(1.0)


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
    randomise(model, gen)
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
    first, second = PROMPT_FRAMES
    video_prompts = {
        first: (np.array([[110, 100], [125, 100], [30, 30]], np.float32), np.array([1, 1, 0], np.int32), np.array([70, 65, 155, 135], np.float32)),
        second: (None, None, np.array([85, 70, 175, 130], np.float32)),
    }
    with torch.inference_mode():
        state = video.init_state(video_path="frames-in-memory")
        for k, (pts, lab, box) in video_prompts.items():
            _, _, masks = video.add_new_points_or_box(state, frame_idx=k, obj_id=1, points=pts, labels=lab, box=box)
            ref[f"cond{k}.points"] = torch.from_numpy(pts if pts is not None else np.zeros((0, 2), np.float32))
            ref[f"cond{k}.labels"] = torch.from_numpy((lab if lab is not None else np.zeros(0, np.int32)).astype(np.int64))
            ref[f"cond{k}.box"] = torch.from_numpy(box)
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
