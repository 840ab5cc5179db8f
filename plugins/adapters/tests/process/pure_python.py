"""Test fixture: plugins written without numpy (CLISC_PLUGIN_NUMPY=0).

usage: pure_python.py KIND   KIND = volumetric-segmenter | promptable-segmenter | filter
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import clisc_plugin as cp  # noqa: E402

KIND = sys.argv[1]


class Volumetric:
    """Thresholds FLAIR; `train` learns the threshold as the mean target intensity minus a margin."""
    name, kind, version = "pure-volumetric", "volumetric-segmenter", "0.1.0"
    settings = [cp.setting("threshold", "float", 1.0, "FLAIR threshold before training")]

    def configure(self, settings, context):
        self.threshold = settings["threshold"]
        self.work_dir = context["work_dir"]

    def train(self, cases, validation=None):
        inside = []
        for case in cases:
            flair = case.image["flair"].data
            inside += [v for v, t in zip(flair, case.target.data) if t]
            cp.progress("train", len(inside), len(inside), "collected")
        self.threshold = 0.5 * sum(inside) / max(len(inside), 1)
        cp.log("learned threshold %.3f" % self.threshold)
        metrics = {"threshold": self.threshold}
        if validation:
            # One "checkpoint": its mean Dice on the held-out targets.
            def dice(c):
                pred = [v > self.threshold for v in c.image["flair"].data]
                truth = [bool(t) for t in c.target.data]
                both = sum(p and t for p, t in zip(pred, truth))
                return 2.0 * both / max(sum(pred) + sum(truth), 1)
            scores = [dice(c) for c in validation]
            metrics.update(validation_cases=len(validation), selected_step=1,
                           selected_validation_dice=sum(scores) / len(scores))
        return metrics

    def predict(self, case):
        flair = case.image["flair"]
        return cp.Array("u8", flair.shape, [int(v > self.threshold) for v in flair.data])

    def save(self, path):
        with open(path, "w") as f:
            f.write(repr(self.threshold))

    def load(self, path):
        with open(path) as f:
            self.threshold = float(f.read())


class BoxFill:
    """Fills each prompt box (pixels brighter than 0.5 inside it)."""
    name, kind, version = "pure-box-fill", "promptable-segmenter", "0.1.0"

    def segment(self, image, prompts, info):
        h, w = image.shape
        masks = []
        for p in prompts:
            x0, y0, x1, y1 = p["box"]
            masks.append([int(x0 <= x <= x1 and y0 <= y <= y1 and image.data[y * w + x] > 0.5)
                          for y in range(h) for x in range(w)])
        return masks


class DiceFilter:
    """Keeps candidates whose pseudo-label agrees with the reference (Dice >= 0.5)."""
    name, kind, version = "pure-dice-filter", "filter", "0.1.0"

    def select(self, candidates):
        out = []
        for c in candidates:
            a, b = c["pseudo_label"].data, c["reference"].data
            inter = sum(1 for x, y in zip(a, b) if x and y)
            total = sum(1 for x in a if x) + sum(1 for y in b if y)
            dice = 2.0 * inter / total if total else 1.0
            out.append({"score": dice, "keep": dice >= 0.5})
        return out


cp.serve({"volumetric-segmenter": Volumetric, "promptable-segmenter": BoxFill, "filter": DiceFilter}[KIND]())
