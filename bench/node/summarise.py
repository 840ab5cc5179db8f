#!/usr/bin/env python3
"""Writes bench/results/node.md from the result.json files of bench/node.sh.

usage: summarise.py RUNS_DIR   (holding load/, faults/, disk-full/)
"""

import json
import os
import platform
import sys
import time


def load(runs, name):
    path = os.path.join(runs, name, "result.json")
    with open(path) as f:
        return json.load(f)


def orthanc_studies(runs):
    try:
        return load(runs, "load").get("studies_sent_by_orthanc", 0)
    except OSError:
        return 0


def curve(r, every_s=60):
    """Memory and open files at about one sample per `every_s` seconds."""
    rows = r["samples"]["rows"]
    out, next_t = [], 0.0
    for t, rss, threads, fds in rows:
        if t >= next_t:
            out.append((t, rss / 1024, threads, fds))
            next_t = t + every_s
    if rows and out[-1][0] != rows[-1][0]:
        t, rss, threads, fds = rows[-1]
        out.append((t, rss / 1024, threads, fds))
    return out


def main():
    runs = sys.argv[1]
    lines = ["# The DICOM node under load (bench/node.sh)", "",
             "Measured %s on %s (%d CPUs); `clisc dicom serve` (release) on loopback, "
             "DCMTK `storescu` senders (one association per study, a failed study "
             "sent again after 1-2 s; in `load`, %d studies were sent by Orthanc instead), DCMTK `storescp` as the SEG destination, a "
             "TorchScript threshold network wrapped by `clisc model wrap`, "
             "`--settle 3`. Figures depend on the machine and its load."
             % (time.strftime("%Y-%m-%d"), platform.node() or "this machine", os.cpu_count(),
                orthanc_studies(runs)), ""]
    table = ["| run | studies | instances | senders | limit | lost | stored twice | studies without SEG | "
             "more SEGs than takes | taken twice (sent again) | failed sends (association rejected / out of resources / other / Orthanc) | "
             "throughput (instances/s) | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    results = {}
    for name in ["load", "faults", "disk-full"]:
        try:
            r = load(runs, name)
        except OSError:
            continue
        results[name] = r
        over = sum(1 for s in r["per_study"].values() if s["segs_received"] > max(s["takes"], 1))
        rej = r["rejections"]
        table.append("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d / %d / %d / %d | %.1f | %.0f |" % (
            name, r["studies"], r["instances_total"], r["concurrency"], r["max_associations"],
            r["instances_lost"], r["instances_stored_more_than_once"], len(r["studies_without_seg"]), over,
            sum(1 for s in r["per_study"].values() if s["takes"] > 1), rej["association"], rej["out_of_resources"], rej["other"], rej.get("orthanc", 0),
            r["throughput_instances_per_s"] if name != "disk-full" else float("nan"), r["node_peak_rss_mb"]))
    lines += table + ["", "Throughput is instances received per second while the senders ran (segmentation "
                      "goes on alongside); it is left out (nan) for `disk-full`, where most of the first "
                      "round was refused.", ""]
    if "faults" in results:
        lines.append("Kills (`faults`): " + "; ".join(
            "%s at %.0f s (outbox pending %d, studies in work %d)" % (k["when"], k["at_s"], k["outbox_pending"],
                                                                       k["studies_in_work"])
            for k in results["faults"]["kills"]) + ".")
        lines.append("")
    if "disk-full" in results:
        d = results["disk-full"].get("disk_full", {})
        lines.append("Full disk: %d C-STORE answered out of resources, %d unreadable or half-written "
                     "instance files, node alive: %s; then the storage was enlarged and every study sent again."
                     % (d.get("out_of_resources_answers", 0), len(d.get("unreadable_or_partial_instances", [])),
                        d.get("node_alive")))
        lines.append("")
    if "load" in results:
        r = results["load"]
        stalls = ", ".join("%s dropped after %s s" % (p["kind"], p["closed_after_s"]) for p in r["stalled_peers"])
        lines.append("Bad peers during `load` (`--idle-timeout 10`): %s." % stalls)
        lines.append("")
        lines.append("Soak: %d more sends, one every ~3 s after the load, cycling through %d studies "
                     "(so each is sent again about every %d s and taken again; %d of them without a SEG at the end). "
                     "The node's memory, threads and open files, one sample a minute (the whole "
                     "curve, one sample a second, is in work/node-bench/load/result.json):"
                     % (r["soak_studies"], max(1, int(r.get("soak_seconds", 600) // 20)),
                        3 * max(1, int(r.get("soak_seconds", 600) // 20)), r["soak_studies_without_seg"]))
        lines += ["", "| t (s) | RSS (MB) | threads | open files |", "|---|---|---|---|"]
        lines += ["| %.0f | %.0f | %d | %d |" % row for row in curve(r)]
        lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
