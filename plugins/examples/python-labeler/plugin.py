"""Example out-of-process clisc plugin: a pseudo-labeler in Python.

A slice is "tumour" when more than `min_fraction` of its brain pixels are
brighter than `k` (the FLAIR input is z-scored over the brain, so `k` is in
standard deviations). Run by the `process-pseudo-labeler` adapter:

    [stages.pseudo_labeler]
    plugin = "process-pseudo-labeler"
    settings = { command = ["python3", "plugins/examples/python-labeler/plugin.py"], settings = { k = 2.0 } }
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "adapters", "python"))
import clisc_plugin as cp  # noqa: E402


class BrightSliceLabeler:
    name = "python-labeler"
    kind = "pseudo-labeler"
    version = "0.1.0"
    description = "Example Python plugin: slice is tumour when enough brain pixels are bright"
    settings = [
        cp.setting("k", "float", 2.0, "brightness threshold in brain standard deviations"),
        cp.setting("min_fraction", "float", 0.01, "fraction of the slice's brain pixels that must be bright"),
    ]

    def configure(self, settings, context):
        self.k, self.min_fraction = settings["k"], settings["min_fraction"]

    def label_slices(self, case):
        flair, brain = case.image["flair"], case.brain_mask > 0
        labels = []
        for z in range(case.nz):
            inside = brain[z].sum()
            fraction = (flair[z][brain[z]] > self.k).mean() if inside else 0.0
            labels.append({"label": int(fraction > self.min_fraction), "probability": 1.0, "kept": bool(inside)})
        return labels


if __name__ == "__main__":
    cp.serve(BrightSliceLabeler())
