"""A tiny random-weight Segment Anything model in Meta's checkpoint format,
and reference 3D pseudo-labels computed with Meta's own code
(`segment_anything`), for tests/sam_pipeline.rs.

    $CLISC_PYTHON tiny_sam.py make OUT.pth
        Builds `segment_anything.modeling.Sam` from Meta's classes with the
        official geometry (1024 px input, 16 px patches, windows of 14,
        256 x 256 low-resolution masks) but a narrow, shallow network: an
        image encoder of width 32, depth 2 (block 0 windowed, block 1
        global), 2 heads, a 32-channel neck and prompt embedding, and a
        two-way transformer of depth 2 with 8 heads (Meta's builder value).
        Every floating-point tensor of the state dict gets seeded random
        values (the built-in init leaves norms, biases and relative
        positions at 1/0, which would hide wiring mistakes), then
        `torch.save(model.state_dict(), OUT)`, as the official
        `sam_vit_*.pth` files are written.

    $CLISC_PYTHON tiny_sam.py reference MODEL.pth INPUT.json OUT.json
        Rebuilds the same architecture, loads MODEL.pth with
        `load_state_dict` (strict) and, for every case listed in
        INPUT.json, does what CLISC and the `sam` plugin document:
        each prompted slice (the preprocessed, cropped slice the stage saw)
        -> per-slice min-max to 8 bits -> histogram equalisation (OpenCV's
        `equalizeHist` algorithm, written out below in NumPy because
        OpenCV is not installed) -> grey replicated to 3 channels ->
        `SamPredictor.set_image`; then `SamPredictor.predict` with each
        prompt set of the slice (box xyxy, points with labels), either
        `multimask_output=False` or `True` keeping the mask with the best
        predicted IoU, and the union of the slice's masks; the slice masks
        stacked in z, restricted to the brain (nonzero voxels of the raw
        FLAIR, read with nibabel) and put back into the raw FLAIR's grid at
        the brain's bounding box (computed here from the raw FLAIR).
        Slices without prompts stay empty.

        INPUT.json: {"cases": [{"id", "flair": raw FLAIR path,
        "prompts": the pipeline's prompts JSON,
        "slices": [{"z", "width", "height", "offset"}],
        "runs": [{"multimask": bool, "pseudo_label": the pipeline's
        original-grid output of that run, "reference": where to write the
        reference volume (uint8, x fastest, raw FLAIR's shape)}]}],
        "slices_file": F}, F holding the listed preprocessed slices' f32
        values (little-endian, row-major: row = y, column = x) at the
        given element offsets.

        OUT.json, per case: the raw FLAIR's shape and affine and, per run,
        the pipeline output's, as nibabel reads them; the number of
        prompted slices; per run, how many mask pixels the brain
        restriction removed.
"""
import json
import math
import sys

import nibabel as nib
import numpy as np
import torch
from functools import partial
from segment_anything import SamPredictor
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

SEED = 20251127
IMG_SIZE = 1024
PATCH = 16
WIDTH = 32
PROMPT_DIM = 32


def build():
    """Meta's SAM classes wired as `segment_anything.build_sam._build_sam`
    wires them, with tiny widths and depths."""
    grid = IMG_SIZE // PATCH
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=WIDTH,
            img_size=IMG_SIZE,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=PATCH,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=(1,),
            window_size=14,
            out_chans=PROMPT_DIM,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(IMG_SIZE, IMG_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=PROMPT_DIM,
                mlp_dim=64,
                num_heads=8,
            ),
            transformer_dim=PROMPT_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def make(out):
    torch.manual_seed(SEED)
    model = build()
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen)
            if t.dim() == 1:
                # Norm weights around 1, every other vector around 0.
                is_scale = name.endswith("weight")
                t.copy_((1.0 if is_scale else 0.0) + 0.1 * noise)
            elif "rel_pos" in name or "pos_embed" in name:
                t.copy_(0.05 * noise)
            elif "gaussian_matrix" in name:
                t.copy_(noise)
            elif name.startswith("prompt_encoder.") or "tokens" in name:
                t.copy_(0.5 * noise)
            else:
                # Linear (out, in, ...), Conv2d and ConvTranspose2d: unit
                # gain over the fan (ConvTranspose2d keeps `in` first).
                fan = t.shape[0] if "output_upscaling" in name else int(np.prod(t.shape[1:]))
                t.copy_(noise / math.sqrt(fan))
    torch.save(model.state_dict(), out)


def to_u8(values):
    """Per-slice min-max to 8 bits, in f32 like the plugin, rounded half
    away from zero (Rust's `f32::round`)."""
    v = values.astype(np.float32)
    lo, hi = v.min(), v.max()
    if not hi > lo:
        return np.zeros(v.shape, np.uint8)
    scale = np.float32(255.0) / (hi - lo)
    x = ((v - lo) * scale).astype(np.float32)
    return np.clip(np.floor(x.astype(np.float64) + 0.5), 0, 255).astype(np.uint8)


def equalize_hist(img):
    """OpenCV's `equalizeHist`: lookup table from the cumulative histogram
    without the lowest occupied grey level, scaled by
    255 / (pixels - count of that level) in f32, rounded half to even."""
    hist = np.bincount(img.ravel(), minlength=256)
    total = img.size
    first = int(np.flatnonzero(hist)[0])
    if hist[first] == total:
        return np.full(img.shape, first, np.uint8)
    scale = np.float32(255.0) / np.float32(total - hist[first])
    lut = np.zeros(256, np.uint8)
    cumulative = np.cumsum(hist[first + 1 :])
    lut[first + 1 :] = np.clip(np.rint(cumulative.astype(np.float32) * scale), 0, 255)
    return lut[img]


def as_f32(v):
    """A coordinate as the pipeline holds it (f32), widened to f64."""
    return float(np.float32(v))


def reference(model_path, input_path, out_path):
    torch.set_num_threads(2)
    model = build()
    model.load_state_dict(torch.load(model_path, map_location="cpu"), strict=True)
    predictor = SamPredictor(model)
    spec = json.load(open(input_path))
    data = np.fromfile(spec["slices_file"], dtype="<f4")
    report = {}
    for case in spec["cases"]:
        raw = nib.load(case["flair"])
        flair = np.asarray(raw.dataobj)
        brain = (flair != 0) & ~np.isnan(flair)
        nonzero = np.argwhere(brain)
        lo, hi = nonzero.min(0), nonzero.max(0) + 1
        runs = case["runs"]
        cropped = [np.zeros(tuple(hi - lo), np.uint8) for _ in runs]  # (x, y, z)
        removed = [0 for _ in runs]
        by_slice = {}
        for s in json.load(open(case["prompts"])):
            by_slice.setdefault(s["slice"], []).append(s)
        listed = {s["z"]: s for s in case["slices"]}
        assert sorted(listed) == sorted(by_slice), (case["id"], sorted(listed), sorted(by_slice))
        for z, sets in sorted(by_slice.items()):
            s = listed[z]
            w, h = s["width"], s["height"]
            assert (w, h) == cropped[0].shape[:2], (case["id"], z, (w, h), cropped[0].shape)
            values = data[s["offset"] : s["offset"] + w * h].reshape(h, w)
            grey = equalize_hist(to_u8(values))
            predictor.set_image(np.repeat(grey[:, :, None], 3, axis=2))
            in_brain = brain[lo[0] : hi[0], lo[1] : hi[1], lo[2] + z].T  # (y, x)
            for k, run in enumerate(runs):
                union = np.zeros((h, w), bool)
                for p in sets:
                    points = p["points"]
                    masks, iou, _ = predictor.predict(
                        point_coords=np.array([[as_f32(q["x"]), as_f32(q["y"])] for q in points])
                        if points
                        else None,
                        point_labels=np.array([int(q["positive"]) for q in points])
                        if points
                        else None,
                        box=np.array([as_f32(c) for c in p["bbox"]])
                        if p["bbox"] is not None
                        else None,
                        multimask_output=run["multimask"],
                    )
                    assert masks.shape == (3 if run["multimask"] else 1, h, w), masks.shape
                    union |= masks[int(np.argmax(iou))]
                removed[k] += int((union & ~in_brain).sum())
                cropped[k][:, :, z] = (union & in_brain).T
        outputs = []
        for k, run in enumerate(runs):
            full = np.zeros(flair.shape, np.uint8)
            full[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = cropped[k]
            full.ravel(order="F").tofile(run["reference"])
            out = nib.load(run["pseudo_label"])
            outputs.append(
                {
                    "output_shape": list(out.shape),
                    "output_affine": out.affine.tolist(),
                    "removed_outside_brain": removed[k],
                }
            )
        report[case["id"]] = {
            "flair_shape": list(flair.shape),
            "flair_affine": raw.affine.tolist(),
            "prompted_slices": len(by_slice),
            "runs": outputs,
        }
    json.dump(report, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "reference":
        reference(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
