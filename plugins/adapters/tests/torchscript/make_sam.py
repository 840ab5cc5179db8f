"""A random-weight Segment Anything, exported with the documented recipe,
and `SamPredictor`'s masks for the prompts of the adapter's parity test.

usage: make_sam.py OUT_DIR

Writes OUT_DIR/sam.pt (docs/examples/sam_torchscript.py), OUT_DIR/image.u8
(a 768 x 1024 grey image, row-major bytes), and OUT_DIR/expected.json:
for each prompt set its box (or null), points [[x, y, positive], ...], and
the mask `SamPredictor.predict(multimask_output=False)` returns on the
image (grey repeated to RGB), as a string of '0'/'1' per pixel.

The model is small (ViT of width 32, depth 2) but is built with Meta's own
classes at SAM's full input size (1024), so every layer and every
pre/post-processing step of the real model is exercised.
"""

import importlib.util
import json
import os
import sys
from functools import partial

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE = os.path.join(HERE, "../../../../docs/examples/sam_torchscript.py")


def tiny_sam() -> Sam:
    dim = 32
    encoder = ImageEncoderViT(
        depth=2, embed_dim=dim, img_size=1024, mlp_ratio=2,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=16,
        qkv_bias=True, use_rel_pos=True, global_attn_indexes=[1], window_size=14, out_chans=dim,
    )
    prompts = PromptEncoder(embed_dim=dim, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2),
        transformer_dim=dim, iou_head_depth=3, iou_head_hidden_dim=dim,
    )
    return Sam(image_encoder=encoder, prompt_encoder=prompts, mask_decoder=decoder,
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def grey_image(h: int, w: int) -> np.ndarray:
    """A bright disc on a textured background, spanning 0..255."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 60 + 40 * np.sin(x / 37.0) * np.cos(y / 23.0)
    img += 140 * (((x - 600) ** 2 + (y - 380) ** 2) < 150 ** 2)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.round(img).astype(np.uint8)


PROMPTS = [
    {"box": [450, 230, 750, 530], "points": []},
    {"box": [450, 230, 750, 530], "points": [[600, 380, 1], [470, 250, 0]]},
    {"box": None, "points": [[600, 380, 1]]},
    {"box": None, "points": [[600, 380, 1], [100, 100, 0], [620, 400, 1]]},
    {"box": None, "points": [[600 + 10 * i, 380 - 7 * i, i % 3 != 2] for i in range(9)]},
    {"box": [10, 20, 1013, 760], "points": [[300, 500, 1]] * 4},
]


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(7)
    sam = tiny_sam()
    spec = importlib.util.spec_from_file_location("sam_torchscript", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    recipe.export(sam, os.path.join(out, "sam.pt"))

    grey = grey_image(768, 1024)
    grey.tofile(os.path.join(out, "image.u8"))
    predictor = SamPredictor(sam)
    predictor.set_image(np.repeat(grey[:, :, None], 3, axis=2))
    expected = []
    for p in PROMPTS:
        kwargs = {"multimask_output": False}
        if p["box"] is not None:
            kwargs["box"] = np.array(p["box"], dtype=np.float32)
        if p["points"]:
            kwargs["point_coords"] = np.array([q[:2] for q in p["points"]], dtype=np.float32)
            kwargs["point_labels"] = np.array([int(q[2]) for q in p["points"]])
        masks, _, _ = predictor.predict(**kwargs)
        mask = masks[0].astype(np.uint8)
        print(f"prompt set {len(expected)}: {mask.mean():.3f} of the pixels", file=sys.stderr)
        expected.append({"box": p["box"], "points": [[q[0], q[1], bool(q[2])] for q in p["points"]],
                         "mask": "".join("01"[v] for v in mask.reshape(-1))})
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"height": 768, "width": 1024, "prompts": expected}, f)


if __name__ == "__main__":
    main()
