#!/usr/bin/env python3
"""One markdown section of bench/results/realistic.md from a run's
summary.json (called by bench/realistic.sh)."""

import argparse
import json
import statistics
from datetime import datetime, timezone


def ms(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f} (n={len(values)})"


def extra(scores, key):
    return [s.get("extra", {}).get(key) for s in scores]


def main():
    p = argparse.ArgumentParser()
    for a in ("summary", "cohort", "seed", "config", "edits", "wall", "maxrss-kb", "load", "commit"):
        p.add_argument("--" + a, required=True)
    a = p.parse_args()
    s = json.load(open(a.summary))
    rows = []
    if s.get("supervised"):
        rows.append(("mode", "**supervised baseline** (the network learned the training split's ground truth)"))
    if s.get("working_spacing"):
        rows.append(("working spacing (mm)", " x ".join(f"{v:g}" for v in s["working_spacing"])))
    if s.get("bias_correction", "none") != "none":
        rows.append(("bias correction", s["bias_correction"]))
    if s.get("refine_boundary_mm"):
        rows.append(("border refined at the input's resolution (mm band)", f"{s['refine_boundary_mm']:g}"))
    if s.get("slice_labels"):
        k = s["slice_labels"]["kept"]
        rows.append(("slice labels, precision / recall", f"{k['precision']:.3f} / {k['recall']:.3f}"))
    for r in s.get("roi_rounds", []):
        sc = s["rois"][r]
        rows.append((f"ROI ({r}): Dice; precision; recall",
                     f"{ms(x['dice'] for x in sc)}; {ms(extra(sc, 'precision'))}; {ms(extra(sc, 'recall'))}"))
    if s.get("prompts"):
        tot = {k: sum(c[k] for c in s["prompts"]) for k in s["prompts"][0] if k != "case"}
        frac = lambda a, b: f"{100 * tot[a] / tot[b]:.0f}%" if tot[b] else "-"
        rows.append(("prompts: positives on tumour; boxes on tumour; tumour slices prompted",
                     f"{frac('positives_on_tumour', 'positives')}; {frac('boxes_on_tumour', 'boxes')}; "
                     f"{frac('tumour_slices_prompted', 'tumour_slices')}"))
    if s.get("pseudo_masks"):
        sc = s["pseudo_masks"]
        rows.append(("pseudo-masks: Dice; precision; recall",
                     f"{ms(x['dice'] for x in sc)}; {ms(extra(sc, 'precision'))}; {ms(extra(sc, 'recall'))}"))
    if s.get("filter"):
        f = s["filter"]
        rows.append(("network 1 on its training cases (Dice)", ms(x["dice_vs_truth"] for x in f)))
        rows.append(("S3F: network-1 Dice of kept / dropped cases",
                     f"{ms(x['dice_vs_truth'] for x in f if x['keep'])} / "
                     f"{ms(x['dice_vs_truth'] for x in f if not x['keep'])}"))
    for model, sc in sorted(s.get("test", {}).items()):
        rows.append((f"**test Dice ({model})**", f"**{ms(x['dice'] for x in sc)}**"))
        rows.append((f"test HD95 mm; volume ratio ({model})",
                     f"{ms(x['hd95'] for x in sc)}; {ms(extra(sc, 'volume_ratio'))}"))
    rows.append(("wall time, raw NIfTI to report", f"{float(a.wall):.0f} s"))
    rows.append(("peak RSS", f"{int(a.__dict__['maxrss_kb']) / 1e6:.2f} GB"))
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in s.get("timings", {}).items())
    rows.append(("steps", steps))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    print(f"\n## `{a.config}` on the {a.cohort} cohort (seed {a.seed})\n")
    print(f"{when}, commit {a.commit}, 2-core CPU machine, load average before {a.load}."
          + (f" Config edits: `{a.edits}`." if a.edits else "") + "\n")
    print("| figure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    per_case = s.get("test", {}).get("final") or s.get("test", {}).get("network-1") or []
    if per_case:
        print("\nPer test case (last network): " + ", ".join(
            f"{x['case'][-3:]} {x['dice']:.2f}" for x in per_case) + "\n")


if __name__ == "__main__":
    main()
