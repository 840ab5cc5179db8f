"""Independent NumPy/SciPy reference of the `classic-prompt` promptable
segmenter (plugins/weight-free/src/classic.rs), written from the method in
that module's documentation, for `tests/classic_prompt_reference.rs`.

Method as documented (box + positive/negative points -> mask, on a z-scored
FLAIR slice): working region from the dilated box (or the positive points'
box); optional 3x3 mean smoothing; seeds = positive points moved to the
brightest pixel of their 3x3 neighbourhood; f = median around the seeds,
b = `background_quantile` of the tissue pixels of the region's border ring
and of the negative points, t = b + alpha (f - b); growth from the seeds
(always kept) through {smoothed >= t}, 4-connected, blocked by negative
points; the `border_alpha` step; holes filled.

The points below spell out what the documentation says briefly (the
module documentation was made to say all of them after this reference
found where it was silent or worded differently from the code):

A1 Point -> pixel: coordinates are rounded half away from zero and clamped
   to the slice (so a point off the slice lands on its edge pixel).
A2 Box -> region: [floor(min - margin), ceil(max + margin)] per axis, in
   f32, both ends inclusive, clipped to the slice (a box wholly off the
   slice therefore gives the edge row/column, not an empty region).
   Without box and without positive points the mask is empty (negative
   points alone give nothing).
A3 Smoothing: the mean over the 3x3 window with edge replication, over the
   whole slice (pixels at the region's edge see values outside it); f32,
   summed row by row then divided by 9. The summation order is kept here
   only so that f32 rounding is identical and masks can be compared
   exactly.
A4 "Median" and "quantile" are nearest rank: the element of rank
   round((n - 1) q) (q = 0.5 for the median, rounded half away from zero,
   (n - 1) q computed in f32) of the sorted values; for an even count the
   median is the upper middle value, not the mean of the two.
A5 "Best pixel of its neighbourhood": a positive point inside the region
   moves to the brightest smoothed pixel of its 3x3 neighbourhood that is
   inside the region (the point itself wins ties, otherwise the first in
   row-major order). Positive points outside the region are ignored; if
   none is inside, the region's brightest pixel (first in row-major order)
   is the only seed, as without positive points.
A6 The 3x3 neighbourhoods f is taken over are clipped to the slice, not
   to the region; a pixel reached from two points counts twice; without
   positive points f is taken around the brightest pixel.
A7 Border ring: the pixels of the region less than 2 pixels from its edge
   (a 2-pixel ring). Negative points count towards b wherever they are,
   inside the region or not (at their own smoothed value, tissue only).
A8 Tissue: raw (unsmoothed) value > slice minimum + 1e-4 (f32); the levels
   are nevertheless read from the smoothed values.
A9 If the ring and the negative points hold no tissue, b is the median of
   all smoothed values of the region (tissue or not).
A10 If f <= b, t = f (the border step is skipped too).
A11 Negative points block the growth (they are removed from {smoothed >= t}
   before the components are taken), they are not cut out afterwards.
A12 Holes: background components not 4-connected to the slice's edge (the
   whole slice, not the region), as SciPy's `binary_fill_holes` with its
   default cross structure.
A13 Border step: 4-neighbours of the grown mask, inside the region,
   >= b + border_alpha (f - b), tissue (A8), not a negative point; applied
   before hole filling; only when border_alpha < alpha and f > b.

Usage: classic_prompt_reference.py MANIFEST.json OUT_DIR

MANIFEST: {"cases": [{"name", "width", "height", "image" (raw little-endian
f32, row-major, relative to the manifest), "settings": {...}, "sets":
[{"bbox": [x0, y0, x1, y1] | null, "points": [[x, y, positive], ...]}]}]}.
Writes OUT_DIR/<name>.<k>.mask.u8 (0/1, row-major), OUT_DIR/<name>.values.f32
(the smoothed or raw values thresholded) and OUT_DIR/levels.txt (one line
"<name> <k> f b t" per prompt set, f32 as repr of float).
"""

import json
import math
import os
import sys

import numpy as np
from scipy import ndimage

F32 = np.float32
CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


def nearest_rank(values, q):
    """The q-quantile by nearest rank (A4)."""
    v = np.sort(np.asarray(values, dtype=F32))
    pos = float(F32(len(v) - 1) * F32(q))
    return v[min(int(math.floor(pos + 0.5)), len(v) - 1)]


def mean3x3(img):
    """3x3 mean with edge replication (A3)."""
    h, w = img.shape
    padded = np.pad(img, 1, mode="edge")
    acc = np.zeros((h, w), dtype=F32)
    for dy in range(3):
        for dx in range(3):
            acc += padded[dy : dy + h, dx : dx + w]
    return acc / F32(9)


def to_pixel(x, y, w, h):
    """A1: round half away from zero, clamp to the slice."""

    def r(v, n):
        return min(max(int(math.floor(float(v) + 0.5)), 0), n - 1)

    return r(x, w), r(y, h)


def segment(img, bbox, points, s):
    """Mask (bool HxW) and (f, b, t) for one prompt set, or (empty, None)."""
    h, w = img.shape
    empty = np.zeros((h, w), dtype=bool)
    pos = [to_pixel(x, y, w, h) for x, y, p in points if p]
    neg = [to_pixel(x, y, w, h) for x, y, p in points if not p]

    # 1. Working region (A2).
    if bbox is not None:
        m = F32(s["box_margin"])
        bx = [F32(bbox[0]), F32(bbox[2])]
        by = [F32(bbox[1]), F32(bbox[3])]
        lo_x, hi_x, lo_y, hi_y = min(bx) - m, max(bx) + m, min(by) - m, max(by) + m
    elif pos:
        m = F32(s["no_box_margin"])
        xs = [F32(p[0]) for p in pos]
        ys = [F32(p[1]) for p in pos]
        lo_x, hi_x, lo_y, hi_y = min(xs) - m, max(xs) + m, min(ys) - m, max(ys) + m
    else:
        return empty, None
    x0 = min(max(math.floor(lo_x), 0), w - 1)
    x1 = min(max(math.ceil(hi_x), 0), w - 1)
    y0 = min(max(math.floor(lo_y), 0), h - 1)
    y1 = min(max(math.ceil(hi_y), 0), h - 1)
    region = empty.copy()
    region[y0 : y1 + 1, x0 : x1 + 1] = True

    # 2. Smoothing.
    v = mean3x3(img) if s["smooth"] else img.copy()
    tissue = img > F32(img.min()) + F32(1e-4)  # A8

    # Seeds (A5).
    seeds = []
    for x, y in pos:
        if not region[y, x]:
            continue
        ys, xs = np.nonzero(region[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2])
        ys, xs = ys + max(y - 1, 0), xs + max(x - 1, 0)
        best = v[ys, xs].max()
        if v[y, x] == best:
            seeds.append((x, y))
        else:
            k = int(np.argmax(v[ys, xs] == best))  # first in row-major order
            seeds.append((int(xs[k]), int(ys[k])))
    if not seeds:
        sub = v[y0 : y1 + 1, x0 : x1 + 1]
        k = int(np.argmax(sub))  # first maximum in row-major order
        seeds.append((x0 + k % sub.shape[1], y0 + k // sub.shape[1]))

    # 3. Levels.
    # f around the seeds (the points after their move, A5).
    fg = np.concatenate(
        [v[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].ravel() for x, y in seeds]
    )
    f = nearest_rank(fg, 0.5)
    yy, xx = np.mgrid[0:h, 0:w]
    near_edge = (xx - x0 < 2) | (x1 - xx < 2) | (yy - y0 < 2) | (y1 - yy < 2)
    ring = region & near_edge  # A7: 2-pixel ring
    bg = list(v[ring & tissue])
    bg += [v[y, x] for x, y in neg if tissue[y, x]]
    if bg:
        b = nearest_rank(bg, s["background_quantile"])
    else:
        b = nearest_rank(v[region], 0.5)  # A9
    alpha = F32(s["alpha"])
    t = b + alpha * (f - b) if f > b else f  # A10

    # 4. Growth from the seeds, 4-connected, negative points blocked (A11).
    blocked = empty.copy()
    for x, y in neg:
        blocked[y, x] = True
    above = region & (v >= t) & ~blocked
    seed_mask = empty.copy()
    for x, y in seeds:
        if not blocked[y, x]:
            seed_mask[y, x] = True
    growable = above | seed_mask  # the seeds are in the mask even below t
    labels, _ = ndimage.label(growable, structure=CROSS)
    keep = np.unique(labels[seed_mask & growable])
    keep = keep[keep != 0]
    mask = np.isin(labels, keep)

    # Border step (A13), from the schema's `border_alpha`.
    border_alpha = F32(s["border_alpha"])
    if border_alpha < alpha and f > b:
        border_t = b + border_alpha * (f - b)
        near = ndimage.binary_dilation(mask, structure=CROSS) & ~mask
        mask |= near & region & (v >= border_t) & tissue & ~blocked

    if s["fill_holes"]:
        # A12; fills back a negative point the mask encloses.
        mask = ndimage.binary_fill_holes(mask, structure=CROSS)
    return mask, (f, b, t)


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    manifest_path, out_dir = argv[1:]
    base = os.path.dirname(os.path.abspath(manifest_path))
    with open(manifest_path) as fh:
        manifest = json.load(fh)
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    for case in manifest["cases"]:
        w, h = case["width"], case["height"]
        img = np.fromfile(os.path.join(base, case["image"]), dtype="<f4").reshape(h, w)
        s = case["settings"]
        values = mean3x3(img) if s["smooth"] else img
        values.astype("<f4").tofile(os.path.join(out_dir, f"{case['name']}.values.f32"))
        for k, ps in enumerate(case["sets"]):
            mask, levels = segment(img, ps["bbox"], ps["points"], s)
            mask.astype(np.uint8).tofile(os.path.join(out_dir, f"{case['name']}.{k}.mask.u8"))
            if levels is None:
                lines.append(f"{case['name']} {k} nan nan nan")
            else:
                lines.append(f"{case['name']} {k} " + " ".join(repr(float(x)) for x in levels))
    with open(os.path.join(out_dir, "levels.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv)
