#!/usr/bin/env python3
"""Drives `clisc dicom serve` as a busy PACS would, on loopback, and
checks that nothing is lost.

usage: load.py --clisc BIN --out DIR [--studies N] [--instances MIN-MAX]
               [--concurrency K] [--kills K] [--stalled N] [--soak SECONDS]
               [--storage-mb MB] [--max-associations A] [--seed S]

* Studies: N one-series FLAIR studies (64 x 64 pixels, MIN..MAX
  instances each, a bright ellipsoid in noise), written with pydicom
  (tests/support/make_dicom_study.py's writer).
* The node: `clisc dicom serve` with a TorchScript threshold network
  wrapped by `clisc model wrap` (plugins/adapters/tests/torchscript), its
  SEGs sent to DCMTK's `storescp`.
* Senders: K threads, each sending whole studies with DCMTK's `storescu`
  (one association per study), or, for the share `--orthanc-share` of
  the studies, asking Orthanc (which holds them) to send them with
  C-STORE. A study whose send fails (association
  rejected, connection lost, a failure status) is sent again after a
  pause, as a PACS retries.
* Faults: `--kills K` SIGKILLs the node K times (alternately once a share
  of the instances arrived and while a SEG waits in the outbox) and
  restarts it on the same storage; `--stalled N` opens N connections that
  stall mid-PDU, send garbage or stay silent, and times how long the node
  takes to drop each; `--storage-mb` puts the storage on a tmpfs of that
  size (root), so that the disk fills, then enlarges it and sends again.
* `--soak S`: after the studies, keeps sending one study every few
  seconds for S seconds; the node's memory and open files are sampled
  every second throughout (the curve is in the result).

Writes DIR/result.json: instances sent / stored / lost / stored twice,
studies segmented (and more than once), SEGs received per study,
rejections seen by senders, throughput, the node's peak memory and
file-descriptor counts, and the samples. Exit status 0 whatever the
figures: the caller (tests/dicom_node_load.rs, bench/node.sh) judges them.
"""

import argparse
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pydicom
from pydicom.uid import generate_uid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "../.."))


def load_writer():
    spec = importlib.util.spec_from_file_location(
        "make_dicom_study", os.path.join(REPO, "tests/support/make_dicom_study.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ studies

def make_studies(root, count, lo, hi, rng):
    """Writes `count` FLAIR studies under root/studies; returns
    [{uid, folder, sops}]."""
    writer = load_writer()
    studies = []
    for i in range(count):
        nz = int(rng.integers(lo, hi + 1))
        z, y, x = np.mgrid[0:nz, 0:64, 0:64].astype(np.float64)
        vol = 100.0 + 10.0 * rng.standard_normal((nz, 64, 64))
        cz, cy, cx = nz / 2, 30 + rng.integers(-5, 6), 34 + rng.integers(-5, 6)
        inside = ((z - cz) / (nz / 5)) ** 2 + ((y - cy) / 9) ** 2 + ((x - cx) / 11) ** 2 < 1
        vol[inside] += 250.0
        vol = np.transpose(vol, (2, 1, 0))  # (x, y, z) as the writer expects
        uid = generate_uid()
        folder = os.path.join(root, "studies", "%03d" % i)
        writer.write_series(folder, vol, uid, "LOAD-%04d" % i, generate_uid(), 3, "AX FLAIR", (1.0, 1.0, 2.0))
        series = os.path.join(folder, "series3")
        sops = [pydicom.dcmread(os.path.join(series, f), stop_before_pixels=True).SOPInstanceUID
                for f in sorted(os.listdir(series))]
        studies.append({"uid": uid, "folder": series, "sops": sops})
    return studies


# ------------------------------------------------------------------ processes

class Node:
    """`clisc dicom serve`, restartable on the same storage."""

    def __init__(self, args, storage, model, port, destination):
        self.cmd = [args.clisc, "dicom", "serve", "--ae-title", "CLISC", "--listen", "127.0.0.1:%d" % port,
                    "--allow", "SENDER", "--model", model, "--storage", storage,
                    "--destination", destination, "--settle", str(args.settle), "--retry-delay", "1",
                    "--device", "cpu", "--threads", "1",
                    "--max-associations", str(args.max_associations),
                    "--idle-timeout", str(args.idle_timeout)]
        self.port = port
        self.log = open(os.path.join(args.out, "node.log"), "ab")
        self.proc = None
        self.starts = 0

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log)
        self.starts += 1
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("clisc dicom serve exited (%s); see node.log" % self.proc.returncode)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("clisc dicom serve did not listen within 60 s")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Orthanc:
    """Orthanc on loopback, as a second kind of sender: studies uploaded
    over REST, then pushed to the node with C-STORE (`/modalities/clisc/store`)."""

    AE = "ORTHANC"

    def __init__(self, out, node_port, jobs):
        self.dir = os.path.join(out, "orthanc")
        os.makedirs(os.path.join(self.dir, "db"), exist_ok=True)
        self.http = free_port()
        config = {"Name": "clisc-load", "StorageDirectory": os.path.join(self.dir, "db"),
                  "IndexDirectory": os.path.join(self.dir, "db"), "HttpPort": self.http,
                  "DicomPort": free_port(), "DicomAet": self.AE, "RemoteAccessAllowed": False,
                  "AuthenticationEnabled": False, "Plugins": [], "DicomScuTimeout": 30,
                  "ConcurrentJobs": jobs, "DicomModalities": {"clisc": ["CLISC", "127.0.0.1", node_port]}}
        with open(os.path.join(self.dir, "orthanc.json"), "w") as f:
            json.dump(config, f)
        log = open(os.path.join(self.dir, "orthanc.log"), "wb")
        self.proc = subprocess.Popen(["Orthanc", os.path.join(self.dir, "orthanc.json")], stdout=log, stderr=log)
        if not wait_for(lambda: self.request("GET", "/system") is not None, 30, 0.2):
            raise SystemExit("Orthanc did not answer on HTTP within 30 s; see orthanc/orthanc.log")

    def request(self, method, path, body=None, timeout=300):
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.http, path), data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"null")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def upload(self, study):
        """Uploads a study's files; remembers Orthanc's study ID."""
        for f in sorted(os.listdir(study["folder"])):
            with open(os.path.join(study["folder"], f), "rb") as fh:
                r = self.request("POST", "/instances", fh.read())
            if not r or r.get("Status") not in ("Success", "AlreadyStored"):
                raise SystemExit("Orthanc refused %s: %s" % (f, r))
            study["orthanc_id"] = r["ParentStudy"]

    def push(self, study):
        """C-STORE of the whole study to the node; True when Orthanc says it succeeded."""
        r = self.request("POST", "/modalities/clisc/store",
                         {"Resources": [study["orthanc_id"]], "Synchronous": True})
        return r is not None and r.get("FailedInstancesCount", 1) == 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def proc_status(pid):
    """(VmRSS kB, VmHWM kB, threads, open files) of a live process."""
    try:
        fields = {}
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                fields[k] = v.split()[0] if v.split() else "0"
        fds = len(os.listdir("/proc/%d/fd" % pid))
        return int(fields.get("VmRSS", 0)), int(fields.get("VmHWM", 0)), int(fields.get("Threads", 0)), fds
    except (OSError, ValueError):
        return None


class Sampler(threading.Thread):
    def __init__(self, node, t0):
        super().__init__(daemon=True)
        self.node, self.t0, self.samples, self.stop = node, t0, [], False
        self.peak_hwm = 0

    def run(self):
        while not self.stop:
            p = self.node.proc
            s = proc_status(p.pid) if p and p.poll() is None else None
            if s:
                rss, hwm, threads, fds = s
                self.peak_hwm = max(self.peak_hwm, hwm)
                self.samples.append([round(time.time() - self.t0, 1), rss, threads, fds])
            time.sleep(1.0)


# ------------------------------------------------------------------ senders

class Senders:
    def __init__(self, port, orthanc=None):
        self.port = port
        self.orthanc = orthanc
        self.lock = threading.Lock()
        self.attempts = 0
        self.failed_attempts = 0
        self.rejections = {"association": 0, "out_of_resources": 0, "other": 0, "orthanc": 0}
        self.instances_sent = 0

    def send(self, study, give_up_after=600):
        """Sends a study until one association stores every instance."""
        deadline = time.time() + give_up_after
        while time.time() < deadline and "orthanc_id" in study:
            ok = self.orthanc.push(study)
            with self.lock:
                self.attempts += 1
                if ok:
                    self.instances_sent += len(study["sops"])
                    return True
                self.failed_attempts += 1
                self.rejections["orthanc"] += 1
            time.sleep(1.0 + random.random())
        while time.time() < deadline:
            out = subprocess.run(
                ["storescu", "-v", "-aet", "SENDER", "-aec", "CLISC", "-ta", "30", "-td", "120",
                 "+sd", "127.0.0.1", str(self.port), study["folder"]],
                capture_output=True, text=True)
            text = out.stdout + out.stderr
            stores_ok = text.count("Received Store Response (Success)")
            with self.lock:
                self.attempts += 1
                self.instances_sent += stores_ok
            if out.returncode == 0 and stores_ok == len(study["sops"]):
                return True
            with self.lock:
                self.failed_attempts += 1
                low = text.lower()
                if "association rejected" in low:
                    self.rejections["association"] += 1
                elif "out of resources" in low or "outofresources" in low:
                    self.rejections["out_of_resources"] += 1
                else:
                    self.rejections["other"] += 1
            time.sleep(1.0 + random.random())
        return False


def send_all(senders, studies, concurrency, give_up_after=600):
    queue = list(studies)
    lock = threading.Lock()
    unsent = []

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                s = queue.pop(0)
            if not senders.send(s, give_up_after):
                unsent.append(s["uid"])

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    return threads, unsent


# ------------------------------------------------------------------ faults

def stalled_peers(port, count, idle_timeout):
    """Opens connections that misbehave; returns seconds until the node
    closed each (None when it did not within idle_timeout + 30 s)."""
    results = [None] * count
    kinds = ["silent", "stalled-mid-pdu", "garbage"]

    def one(i):
        kind = kinds[i % 3]
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if kind == "stalled-mid-pdu":
            s.sendall(bytes([0x01, 0x00, 0x00, 0x00, 0x01, 0x00]) + b"\x00\x01")  # a header, 2 of 256 bytes
        elif kind == "garbage":
            s.sendall(bytes(random.Random(i).getrandbits(8) for _ in range(300)))
        t0 = time.time()
        s.settimeout(idle_timeout + 30)
        try:
            while s.recv(4096):
                pass
            results[i] = {"kind": kind, "closed_after_s": round(time.time() - t0, 1)}
        except socket.timeout:
            results[i] = {"kind": kind, "closed_after_s": None}
        except OSError as e:  # a reset is a drop too
            results[i] = {"kind": kind, "closed_after_s": round(time.time() - t0, 1), "how": str(e)}
        finally:
            s.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    return threads, results


def count_files(folder, suffix=".dcm"):
    n = 0
    for _, _, files in os.walk(folder):
        n += sum(1 for f in files if f.endswith(suffix))
    return n


# ------------------------------------------------------------------ checks

def stored_instances(storage):
    """{sop uid: [take folders]} over inbox, work, processed, failed."""
    where = {}
    for area in ["inbox", "work", "processed", "failed"]:
        base = os.path.join(storage, area)
        if not os.path.isdir(base):
            continue
        for take in sorted(os.listdir(base)):
            d = os.path.join(base, take)
            for f in os.listdir(d) if os.path.isdir(d) else []:
                if f.endswith(".dcm"):
                    where.setdefault(f[:-4], []).append(area + "/" + take)
    return where


def received_segs(folder):
    by_study = {}
    for f in os.listdir(folder):
        path = os.path.join(folder, f)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if ds.Modality == "SEG":
            by_study.setdefault(ds.StudyInstanceUID, set()).add(ds.SOPInstanceUID)
    return by_study


def unreadable_instances(storage):
    """Instance files that are not complete DICOM (pixel data included)."""
    bad = []
    for area in ["inbox", "work", "processed"]:
        for root, _, files in os.walk(os.path.join(storage, area)):
            for f in files:
                path = os.path.join(root, f)
                if f.endswith(".part"):
                    bad.append(path)
                    continue
                try:
                    ds = pydicom.dcmread(path)
                    ds.pixel_array
                except Exception:
                    bad.append(path)
    return bad


def node_idle(storage):
    """Nothing waiting in the inbox, being segmented, or to be sent."""
    return all(not os.listdir(os.path.join(storage, d)) for d in ["inbox", "work", "outbox/pending"])


def wait_for(cond, timeout, step=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# ------------------------------------------------------------------ main

def wrapped_model(args):
    models = os.path.join(args.out, "models")
    subprocess.run([sys.executable, os.path.join(REPO, "plugins/adapters/tests/torchscript/make_models.py"), models],
                   check=True, capture_output=True)
    model = os.path.join(args.out, "threshold.ckpt")
    subprocess.run([args.clisc, "--quiet", "model", "wrap", "--plugin", "torchscript-volumetric-segmenter",
                    "--set", "model=" + os.path.join(models, "volumetric.pt"), "--out", model], check=True)
    return model


def mount_tmpfs(path, mb):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % mb, "tmpfs", path], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clisc", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--studies", type=int, default=50)
    ap.add_argument("--instances", default="30-150")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--kills", type=int, default=0)
    ap.add_argument("--stalled", type=int, default=0)
    ap.add_argument("--soak", type=float, default=0.0)
    ap.add_argument("--storage-mb", type=int, default=0)
    ap.add_argument("--max-associations", type=int, default=32)
    ap.add_argument("--idle-timeout", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--orthanc-share", type=float, default=0.0,
                    help="share of the studies Orthanc sends (uploaded to it first); the rest go by storescu")
    args = ap.parse_args()
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    random.seed(args.seed)
    lo, hi = (int(v) for v in args.instances.split("-"))

    studies = make_studies(args.out, args.studies, lo, hi, rng)
    total = sum(len(s["sops"]) for s in studies)
    model = wrapped_model(args)
    storage = os.path.join(args.out, "storage")
    if args.storage_mb:
        mount_tmpfs(storage, args.storage_mb)
    segs_dir = os.path.join(args.out, "received")
    os.makedirs(segs_dir, exist_ok=True)
    dest_port, node_port = free_port(), free_port()
    receiver = subprocess.Popen(["storescp", "-aet", "DEST", "-od", segs_dir, str(dest_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = Node(args, storage, model, node_port, "DEST@127.0.0.1:%d" % dest_port)
    orthanc = None
    if args.orthanc_share > 0:
        node.cmd += ["--allow", Orthanc.AE]
        orthanc = Orthanc(args.out, node_port, max(2, args.concurrency // 2))
        for s in studies[:round(args.orthanc_share * len(studies))]:
            orthanc.upload(s)
    result = {"studies": len(studies), "instances_per_study": [lo, hi], "instances_total": total,
              "concurrency": args.concurrency, "max_associations": args.max_associations,
              "kills": [], "storage_mb": args.storage_mb,
              "studies_sent_by_orthanc": sum(1 for s in studies if "orthanc_id" in s),
              "soak_seconds": args.soak}
    t0 = time.time()
    node.start()
    sampler = Sampler(node, t0)
    sampler.start()
    try:
        senders = Senders(node_port, orthanc)
        stall_threads, stalls = stalled_peers(node_port, args.stalled, args.idle_timeout)
        push_start = time.time()
        # With a small storage the first sends cannot all succeed: they give
        # up after 30 s, the storage is enlarged, and everything is sent again.
        threads, unsent = send_all(senders, studies, args.concurrency, 30 if args.storage_mb else 600)

        for k in range(args.kills):
            if k % 2 == 0:
                share = (k // 2 + 1) / (args.kills // 2 + 2)
                what = "after %.0f%% of the instances arrived" % (100 * share)
                wait_for(lambda: count_files(storage) >= share * total, 900, 0.05)
            else:
                what = "while a SEG waits in the outbox"
                wait_for(lambda: bool(os.listdir(os.path.join(storage, "outbox/pending"))), 900, 0.02)
            state = {"at_s": round(time.time() - t0, 1), "when": what,
                     "outbox_pending": len(os.listdir(os.path.join(storage, "outbox/pending"))),
                     "studies_in_work": len(os.listdir(os.path.join(storage, "work")))}
            node.kill()
            time.sleep(1.0)
            node.start()
            result["kills"].append(state)

        for t in threads:
            t.join()
        push_seconds = time.time() - push_start

        if args.storage_mb:
            # The disk filled during the sends: record the state, enlarge
            # the storage and send every study again.
            result["disk_full"] = {
                "unreadable_or_partial_instances": unreadable_instances(storage),
                "out_of_resources_answers": senders.rejections["out_of_resources"],
                "node_alive": node.proc.poll() is None,
            }
            subprocess.run(["mount", "-o", "remount,size=%dm" % (args.storage_mb * 20), storage], check=True)
            threads, unsent = send_all(senders, studies, args.concurrency)
            for t in threads:
                t.join()

        uids = {s["uid"] for s in studies}
        wait_for(lambda: uids <= set(received_segs(segs_dir)) and node_idle(storage), 900, 1.0)
        soak = []
        if args.soak > 0:
            extra = make_studies(os.path.join(args.out, "soak"), max(1, int(args.soak // 20)), lo, hi, rng)
            end = time.time() + args.soak
            i = 0
            while time.time() < end:
                s = dict(extra[i % len(extra)])
                senders.send(s)
                soak.append(s["uid"])
                i += 1
                time.sleep(3.0)
            wait_for(lambda: set(soak) <= set(received_segs(segs_dir)) and node_idle(storage), 600, 1.0)
        for t in stall_threads:
            t.join()
    finally:
        sampler.stop = True
        time.sleep(1.1)
        final = proc_status(node.proc.pid) if node.proc and node.proc.poll() is None else None
        node.stop()
        if orthanc:
            orthanc.stop()
        receiver.terminate()
        receiver.wait()
        where = stored_instances(storage) if os.path.isdir(storage) else {}
        if args.storage_mb:
            subprocess.run(["umount", storage], check=False)

    sent = {sop for s in studies for sop in s["sops"]}
    segs = received_segs(segs_dir)
    takes = {}
    for folders in where.values():
        for f in folders:
            area, take = f.split("/", 1)
            takes.setdefault(take.rsplit(".", 1)[0], set()).add(f)
    result.update({
        "instances_acknowledged_to_senders": senders.instances_sent,
        "instances_lost": len(sent - set(where)),
        "instances_stored_more_than_once": sum(1 for sop in sent if len(where.get(sop, [])) > 1),
        "studies_without_seg": sorted(uids - set(segs)),
        "studies_with_more_than_one_seg": sum(1 for u in uids if len(segs.get(u, ())) > 1),
        "per_study": {u: {"takes": len(takes.get(u, ())), "segs_received": len(segs.get(u, ()))} for u in sorted(uids)},
        "studies_failed": sum(1 for u in uids if any(f.startswith("failed/") for f in takes.get(u, ()))),
        "studies_taken_more_than_once": sum(1 for u in uids if len(takes.get(u, ())) > 1),
        "unsent_studies": unsent,
        "send_attempts": senders.attempts,
        "failed_send_attempts": senders.failed_attempts,
        "rejections": senders.rejections,
        "push_seconds": round(push_seconds, 1),
        "throughput_instances_per_s": round(total / push_seconds, 1),
        "node_starts": node.starts,
        "node_peak_rss_mb": round(max(sampler.peak_hwm, final[1] if final else 0) / 1024, 1),
        "stalled_peers": stalls,
        "soak_studies": len(soak),
        "soak_studies_without_seg": len(set(soak) - set(segs)),
        "samples": {"columns": ["t_s", "rss_kb", "threads", "open_files"], "rows": sampler.samples},
        "wall_seconds": round(time.time() - t0, 1),
    })
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
