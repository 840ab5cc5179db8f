#!/usr/bin/env python3
"""Projects the cost of a weight-free run on the whole BraTS 2020 training
set (369 cases of 240x240x155 at 1 mm) from one measured run on the
realistic test cohort (cases of the same size), for one 2-core machine and
for Slurm clusters of such machines.

    python bench/brats_projection.py SUMMARY_JSON WALL_SECONDS [--cases 369] [--nodes 8 64]

SUMMARY_JSON is the run's `summary.json` (bench/realistic.sh test writes
it under work/realistic-test-<config>/run/), WALL_SECONDS its wall time
from raw NIfTI to report (bench/results/realistic.md). Prints a Markdown
section; `bench/brats_projection.sh` appends it to
bench/results/brats_projection.md.

The model, every term measured in that run:
* preparation (reading, crop, resampling, bias correction; and the report):
  the wall time not spent in steps, per case;
* per-case steps (pseudo-labels, prompts and pseudo-masks per training
  case; predictions and evaluation per test case): their time per case;
* the ROI step: the classifier's training time per slice and epoch
  (first round on the kept slices; AMDA rounds on the slices and their
  masked copies), and the rest of the step (CAMs and ROIs) per training
  case; slices per training case as measured;
* the network: a fixed number of steps at the measured time per step (the
  configs fix the step count; a larger training set does not lengthen it,
  though it may need more steps to profit from the data).
On Slurm the per-case steps are job arrays spread over the nodes (each
task prepares its own cases); the ROI step, the network and the
evaluation are single jobs, and each training job prepares every training
case. Queue waits and job start-up are not counted.
"""
import argparse
import json
import math


def costs(summary, wall):
    t = summary["timings"]
    rounds = summary["roi_rounds"]
    n_train = len(summary["rois"][rounds[0]])
    n_test = len(next(iter(summary["test"].values())))
    n_all = n_train + n_test + 1  # + the validation case of a 15/1/14 split
    roi = summary["stage_reports"]["roi-extractor"]
    slices = roi["slices"]
    training = 0.0
    slice_epoch = {}
    for r in rounds:
        seconds, epochs = roi[f"{r}.seconds"], roi[f"{r}.epochs_run"]
        copies = 1 if r == "initial" else 2  # AMDA adds a masked copy of each slice
        slice_epoch[r] = seconds / (slices * copies * epochs)
        training += seconds
    net = summary["stage_reports"]["network-1"]
    return {
        "n_train": n_train,
        "n_test": n_test,
        "prepare": (wall - sum(t.values())) / n_all,
        "pseudo-labels": t["pseudo-labels"] / n_train,
        "slices": slices / n_train,
        "epochs": {r: roi[f"{r}.epochs_run"] for r in rounds},
        "slice_epoch": slice_epoch,
        "roi-rest": (t["roi"] - training) / n_train,
        "prompts": t["prompts"] / n_train,
        "pseudo-masks": t["pseudo-masks"] / n_train,
        "network": net["steps"] * net["seconds_per_step"],
        "network_steps": net["steps"],
        "predictions": t["predictions"] / n_test,
        "evaluation": t["evaluation"] / n_test,
    }


def project(c, cases, nodes):
    """Seconds per step for `cases` cases split 7:1:2 on `nodes` machines."""
    train, test = round(cases * 0.7), round(cases * 0.2)
    shard = lambda n: math.ceil(n / nodes)  # cases of the largest shard
    classifier = sum(
        c["slices"] * train * (1 if r == "initial" else 2) * c["epochs"][r] * c["slice_epoch"][r]
        for r in c["slice_epoch"]
    )
    train_prep = c["prepare"] * train
    return {
        "pseudo-labels": shard(train) * (c["prepare"] + c["pseudo-labels"]),
        "roi": train_prep + classifier + train * c["roi-rest"],
        "prompts": shard(train) * (c["prepare"] + c["prompts"]),
        "pseudo-masks": shard(train) * (c["prepare"] + c["pseudo-masks"]),
        "network-1": train_prep + c["network"],
        "predictions": shard(test) * (c["prepare"] + c["predictions"]),
        "evaluation": test * (c["prepare"] + c["evaluation"]),
    }, train, test


def hours(s):
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("summary")
    ap.add_argument("wall", type=float)
    ap.add_argument("--cases", type=int, default=369)
    ap.add_argument("--nodes", type=int, nargs="*", default=[8, 64])
    a = ap.parse_args()
    s = json.load(open(a.summary))
    c = costs(s, a.wall)
    print(f"Measured run: {c['n_train']} training and {c['n_test']} test cases, wall {a.wall:.0f} s "
          f"({s['pipeline']}).\n")
    print("| measured cost | value |\n|---|---|")
    print(f"| preparation (read, crop, resample, bias fit; report), per case | {c['prepare']:.2f} s |")
    print(f"| slices per training case; classifier training per slice and epoch | {c['slices']:.1f}; "
          + ", ".join(f"{r} {v * 1e3:.1f} ms" for r, v in c["slice_epoch"].items()) + " |")
    print(f"| ROI step apart from training (CAMs, ROIs), per training case | {c['roi-rest']:.2f} s |")
    print(f"| pseudo-labels; prompts; pseudo-masks, per training case | {c['pseudo-labels']:.3f}; "
          f"{c['prompts']:.4f}; {c['pseudo-masks']:.3f} s |")
    print(f"| network: {c['network_steps']:.0f} steps | {c['network']:.0f} s |")
    print(f"| predictions (with border refinement); evaluation, per test case | {c['predictions']:.2f}; "
          f"{c['evaluation']:.3f} s |")
    rows = [("one 2-core machine", 1)] + [(f"Slurm, {n} such nodes", n) for n in a.nodes]
    steps = None
    table = []
    for name, n in rows:
        p, train, test = project(c, a.cases, n)
        steps = list(p)
        total = sum(p.values())
        bound = max(p, key=p.get)
        table.append((name, p, total, bound))
    print(f"\nProjection for {a.cases} cases split 7:1:2 ({train} training, {test} test), "
          "queue waits and job start-up not counted:\n")
    print("| | " + " | ".join(steps) + " | total | bound by |")
    print("|---|" + "---|" * (len(steps) + 2))
    for name, p, total, bound in table:
        print(f"| {name} | " + " | ".join(hours(p[k]) for k in steps)
              + f" | **{hours(total)}** | {bound} ({100 * p[bound] / total:.0f}%) |")


if __name__ == "__main__":
    main()
