"""Reference outputs of MedSAM's inference recipe for the Rust parity test.

MedSAM (medsam_vit_b.pth) is Meta's SAM ViT-B fine-tuned; its published
inference script (MedSAM_Inference.py, `medsam_inference`) is not on
PyPI, so its steps are written here with Meta's classes, as published:

    img_1024 = skimage.transform.resize(img_3c, (1024, 1024), order=3,
                                        preserve_range=True, anti_aliasing=True).astype(np.uint8)
    img_1024 = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), 1e-8, None)
    embedding = medsam.image_encoder(img_1024 as a [1, 3, 1024, 1024] float tensor)
    box_1024 = box / [W, H, W, H] * 1024
    sparse, dense = medsam.prompt_encoder(points=None, boxes=box_1024[:, None, :], masks=None)
    low_res_logits, _ = medsam.mask_decoder(embedding, prompt_encoder.get_dense_pe(), sparse, dense,
                                            multimask_output=False)
    prob = F.interpolate(sigmoid(low_res_logits), (H, W), bilinear, align_corners=False); mask = prob > 0.5

The model is a full-size ViT-B with seeded random weights (the SAM
reference's `randomise`), saved as the official checkpoints are.

Usage: python make_medsam_reference.py OUT_DIR
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from skimage import transform

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_sam_reference import randomise  # noqa: E402

SEED = 20250203
H, W = 200, 240
BOXES = [[60, 50, 170, 150], [100, 80, 140, 120], [10, 10, 230, 190]]


def make_image() -> np.ndarray:
    """A grey 8-bit slice: smooth background, a bright ellipse, noise; 0..255."""
    rng = np.random.default_rng(SEED)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = 50 + 40 * np.sin(xx / 31.0) * np.cos(yy / 17.0)
    img += 120 * ((((xx - 115) / 40) ** 2 + ((yy - 100) / 30) ** 2) < 1)
    img += rng.normal(0, 6, img.shape)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.round(img).astype(np.uint8)


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED)
    medsam = sam_model_registry["vit_b"]()
    randomise(medsam, gen)
    medsam.eval()
    ckpt_tmp = os.path.join(out, "medsam_vit_b_random.pth.tmp")
    torch.save(medsam.state_dict(), ckpt_tmp)

    grey = make_image()
    img_3c = np.repeat(grey[:, :, None], 3, axis=-1)
    img_1024 = transform.resize(img_3c, (1024, 1024), order=3, preserve_range=True,
                                anti_aliasing=True).astype(np.uint8)
    assert (img_1024[..., 0] == img_1024[..., 1]).all() and (img_1024[..., 0] == img_1024[..., 2]).all()
    unit = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)
    x = torch.tensor(unit).float().permute(2, 0, 1).unsqueeze(0)
    ref = {"image": torch.from_numpy(grey), "resized": torch.from_numpy(np.ascontiguousarray(img_1024[..., 0]))}
    with torch.no_grad():
        embedding = medsam.image_encoder(x)
        ref["embedding"] = embedding
        low, prob = [], []
        for box in BOXES:
            box_1024 = np.array([box]) / np.array([W, H, W, H]) * 1024
            box_torch = torch.as_tensor(box_1024, dtype=torch.float)[:, None, :]
            sparse, dense = medsam.prompt_encoder(points=None, boxes=box_torch, masks=None)
            logits, _ = medsam.mask_decoder(image_embeddings=embedding,
                                            image_pe=medsam.prompt_encoder.get_dense_pe(),
                                            sparse_prompt_embeddings=sparse,
                                            dense_prompt_embeddings=dense, multimask_output=False)
            low.append(logits[0, 0])
            prob.append(F.interpolate(torch.sigmoid(logits), size=(H, W), mode="bilinear",
                                      align_corners=False)[0, 0])
        ref["boxes"] = torch.tensor(BOXES, dtype=torch.float64)
        ref["low_res"] = torch.stack(low)
        ref["prob"] = torch.stack(prob)
    for i, p in enumerate(ref["prob"]):
        print("box %d: %.3f of the pixels above 0.5" % (i, (p > 0.5).float().mean().item()), file=sys.stderr)
    ref_tmp = os.path.join(out, "reference.pt.tmp")
    torch.save(ref, ref_tmp)
    os.replace(ckpt_tmp, os.path.join(out, "medsam_vit_b_random.pth"))
    os.replace(ref_tmp, os.path.join(out, "reference.pt"))


if __name__ == "__main__":
    main()
