"""Test fixture for host/cli/tests/byom_pipeline.rs: an ROI extractor written in
Python (numpy), run by the `process-roi-extractor` adapter.

`fit` learns the healthy intensity (mean, std of brain voxels on slices
labelled 0); `extract` marks, on slices labelled 1, the brain voxels more
than `k` standard deviations above it; the activation map is a logistic of
that distance.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "plugins", "adapters", "python"))
import clisc_plugin as cp  # noqa: E402


class HealthyDeviation:
    name = "python-healthy-deviation"
    kind = "roi-extractor"
    version = "0.1.0"
    description = "ROI = voxels of tumour slices far above healthy-slice intensity"
    settings = [cp.setting("k", "float", 3.0, "threshold in healthy standard deviations")]

    def configure(self, settings, context):
        # The host resolves `[run] device = "auto"` before any plugin sees
        # it: a process plugin can hand the string to torch.device as is.
        device = context["device"]
        if device != "cpu" and not device.startswith("cuda:"):
            raise ValueError(f"unresolved device {device!r}: expected cpu or cuda:N")
        self.k = settings["k"]
        self.stats = None

    def fit(self, cases):
        values = []
        for i, case in enumerate(cases):
            flair, brain = case.image["flair"], case.brain_mask > 0
            for s in case.labels:
                if s["kept"] and s["label"] == 0:
                    values.append(flair[s["index"]][brain[s["index"]]])
            cp.progress("fit", i + 1, len(cases))
        values = np.concatenate(values)
        self.stats = (float(values.mean()), float(values.std()) + 1e-6)
        return {"healthy_mean": self.stats[0], "healthy_std": self.stats[1]}

    def extract(self, case):
        mean, std = self.stats
        flair, brain = case.image["flair"], case.brain_mask > 0
        distance = (flair - mean) / std - self.k
        positive = np.zeros(flair.shape[0], dtype=bool)
        for s in case.labels:
            positive[s["index"]] = s["label"] == 1
        inside = brain & positive[:, None, None]
        cam = np.where(inside, 1.0 / (1.0 + np.exp(-distance)), 0.0).astype(np.float32)
        roi = (inside & (distance > 0)).astype(np.uint8)
        return [{"name": "healthy-deviation", "cam": cam, "roi": roi}]


if __name__ == "__main__":
    cp.serve(HealthyDeviation())
