"""MedPy reference values for clisc's metric parity test.

    medpy_metrics.py MANIFEST.json

The manifest lists mask pairs written by the Rust test as raw uint8 files
(x-fastest) with their shape and voxel spacing. Prints a JSON list with
MedPy's dc(pred, gt) and hd95(pred, gt, voxelspacing=spacing) per pair
(null where MedPy refuses: an empty mask).
"""
import json
import sys

import numpy as np
from medpy.metric.binary import dc, hd95

pairs = json.load(open(sys.argv[1]))
out = []
for p in pairs:
    shape = tuple(p["shape"])
    pred = np.fromfile(p["pred"], dtype=np.uint8).reshape(shape, order="F")
    gt = np.fromfile(p["gt"], dtype=np.uint8).reshape(shape, order="F")
    d = float(dc(pred, gt))
    try:
        h = float(hd95(pred, gt, voxelspacing=p["spacing"]))
    except RuntimeError:
        h = None
    out.append({"name": p["name"], "dice": d, "hd95": h})
print(json.dumps(out))
