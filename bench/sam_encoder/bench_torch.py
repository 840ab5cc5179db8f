"""Times the official PyTorch SAM image encoder (segment-anything) on the
same fixed input as the Rust example `sam_encoder_bench`.

Usage: python bench_torch.py WEIGHTS THREADS ITERS [WARMUP]; prints one
JSON line {"impl": "torch", "threads": T, "seconds": [...]}.
"""

import json
import sys
import time

import torch
from segment_anything import sam_model_registry


def main() -> None:
    weights, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    warmup = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    torch.set_num_threads(threads)
    sam = sam_model_registry["vit_b"](checkpoint=weights).eval()
    size = sam.image_encoder.img_size
    x = (torch.arange(3 * size * size, dtype=torch.float32).remainder(4001.0) / 1000.0 - 2.0).view(1, 3, size, size)
    seconds = []
    with torch.no_grad():
        for i in range(warmup + iters):
            t = time.perf_counter()
            y = sam.image_encoder(x)
            float(y.sum())
            if i >= warmup:
                seconds.append(round(time.perf_counter() - t, 4))
    print(json.dumps({"impl": "torch", "threads": threads, "seconds": seconds}))


if __name__ == "__main__":
    main()
