"""Reference outputs of Meta's `segment-anything` for the Rust parity test.

Builds the official ViT-B SAM (full size) with seeded random weights,
saves its state dict exactly as the official checkpoints are saved
(`torch.save(model.state_dict(), "sam_vit_b_random.pth")`, zip format),
then runs the official `SamPredictor` on a synthetic non-square RGB image
with several prompt sets (box, points, box + points, mask input,
multimask) and saves inputs and outputs to `reference.pt` (a flat dict of
tensors, also written with `torch.save`).

Usage: python make_sam_reference.py OUT_DIR
"""

import math
import os
import sys

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry

SEED = 20250126
H, W = 180, 240  # non-square: exercises resize, padding and cropping


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every parameter and buffer gets small random values (the official
    init leaves biases, relative positions, embeddings and norms at 0/1,
    which would hide wiring mistakes)."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            shape = t.shape
            if name.endswith("positional_encoding_gaussian_matrix"):
                t.copy_(torch.randn(shape, generator=gen))
            elif t.dim() == 1 and ("norm" in name or "neck.1" in name or "neck.3" in name
                                   or "output_upscaling.1" in name or "mask_downscaling.1" in name
                                   or "mask_downscaling.4" in name) and name.endswith("weight"):
                t.copy_(1.0 + 0.1 * torch.randn(shape, generator=gen))
            elif t.dim() == 1:
                t.copy_(0.02 * torch.randn(shape, generator=gen))
            elif "rel_pos" in name or name.endswith("pos_embed"):
                t.copy_(0.05 * torch.randn(shape, generator=gen))
            elif name.startswith("prompt_encoder.") and t.dim() == 2:
                t.copy_(0.5 * torch.randn(shape, generator=gen))
            elif "mask_tokens" in name or "iou_token" in name:
                t.copy_(0.5 * torch.randn(shape, generator=gen))
            elif "output_upscaling" in name:  # ConvTranspose2d: (in, out, k, k)
                t.copy_(torch.randn(shape, generator=gen) / math.sqrt(shape[0]))
            else:  # Linear (out, in) and Conv2d (out, in, k, k)
                fan_in = int(np.prod(shape[1:]))
                t.copy_(torch.randn(shape, generator=gen) / math.sqrt(fan_in))


def make_image() -> np.ndarray:
    rng = np.random.default_rng(SEED)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.zeros((H, W, 3))
    img[..., 0] = 40 + 60 * xx / W
    img[..., 1] = 30 + 50 * yy / H
    img[..., 2] = 50
    blob = ((xx - 150) / 45) ** 2 + ((yy - 80) / 30) ** 2 < 1
    img[blob] += [150, 120, 90]
    disc = (xx - 60) ** 2 + (yy - 130) ** 2 < 20 ** 2
    img[disc] += [90, 140, 60]
    img += rng.normal(0, 8, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# (name, point coords, point labels, box, multimask, mask input from prompt set #)
PROMPTS = [
    ("box", None, None, [100, 45, 200, 118], False, None),
    ("box_multi", None, None, [35, 105, 85, 155], True, None),
    ("points", [[150, 80], [160, 90], [40, 20]], [1, 1, 0], None, True, None),
    ("box_points", [[150, 80], [120, 70], [175, 92], [140, 100], [165, 60],
                    [90, 35], [210, 35], [90, 128], [210, 128]],
     [1, 1, 1, 1, 1, 0, 0, 0, 0], [90, 35, 210, 128], False, None),
    ("mask_input", [[150, 80]], [1], None, False, 0),
    ("box_mask_input", None, None, [100, 45, 200, 118], False, 3),
]


def main() -> None:
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    sam = sam_model_registry["vit_b"]()
    randomise(sam, gen)
    sam.eval()
    tmp = os.path.join(out_dir, "sam_vit_b_random.pth.tmp")
    torch.save(sam.state_dict(), tmp)

    image = make_image()
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    ref = {
        "image": torch.from_numpy(image).float(),
        "input": sam.preprocess(torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)[None].contiguous()),
        "features": predictor.features,
    }
    low_res_by_set = []
    for k, (name, coords, labels, box, multimask, mask_from) in enumerate(PROMPTS):
        mask_input = None
        if mask_from is not None:
            prev = low_res_by_set[mask_from]
            mask_input = prev[None, :, :]
            ref[f"p{k}.mask_from"] = torch.tensor([mask_from], dtype=torch.int64)
        masks, iou, low_res = predictor.predict(
            point_coords=None if coords is None else np.array(coords, dtype=np.float64),
            point_labels=None if labels is None else np.array(labels),
            box=None if box is None else np.array(box, dtype=np.float64),
            mask_input=mask_input,
            multimask_output=multimask,
        )
        best = int(np.argmax(iou))
        low_res_by_set.append(low_res[best])
        if coords is not None:
            ref[f"p{k}.coords"] = torch.tensor(coords, dtype=torch.float32)
            ref[f"p{k}.labels"] = torch.tensor(labels, dtype=torch.int64)
        if box is not None:
            ref[f"p{k}.box"] = torch.tensor(box, dtype=torch.float32)
        ref[f"p{k}.multimask"] = torch.tensor([int(multimask)], dtype=torch.int64)
        ref[f"p{k}.low_res"] = torch.from_numpy(low_res)
        ref[f"p{k}.iou"] = torch.from_numpy(iou)
        ref[f"p{k}.masks"] = torch.from_numpy(masks.astype(np.uint8))
        print(f"{name}: iou {iou}, mask pixels {masks.reshape(masks.shape[0], -1).sum(1)}")
    ref["num_prompt_sets"] = torch.tensor([len(PROMPTS)], dtype=torch.int64)
    ref_tmp = os.path.join(out_dir, "reference.pt.tmp")
    torch.save(ref, ref_tmp)
    os.replace(tmp, os.path.join(out_dir, "sam_vit_b_random.pth"))
    os.replace(ref_tmp, os.path.join(out_dir, "reference.pt"))


if __name__ == "__main__":
    main()
