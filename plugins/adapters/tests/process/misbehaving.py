"""Test fixture: a pseudo-labeler process that misbehaves on purpose.

usage: misbehaving.py MODE   with MODE one of
  crash    handshake fine, then dies with exit status 3 on the first call
  hang     handshake fine, then never answers a call
  garbage  writes text instead of frames (before any handshake)
  future   announces protocol version 2, with a handshake laid out differently
  mistyped handshake fine, answers every call with slice labels whose
           probability is text
  chatty   handshake fine, sends a progress frame whose counts are text,
           then answers normally
  error    handshake fine, every call raises (reported, process keeps serving);
           with a second argument FILE, each call first appends a line to it
  busy     handshake fine, then reports progress forever without answering
  hog      handshake fine, then grows its memory by 50 MiB every 0.1 s (to 1 GiB)
  flaky    crashes on the first call if the file MARKER (second argument)
           does not exist yet (it creates it), answers normally after that
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import clisc_plugin as cp  # noqa: E402

MODE = sys.argv[1]


class Misbehaving:
    name = "misbehaving-" + MODE
    kind = "pseudo-labeler"
    version = "0.0.1"
    settings = []

    def label_slices(self, case):
        if MODE == "chatty":
            cp._send({"type": "progress", "task": "labelling", "done": "one", "total": 3})
            return [{"label": 0, "probability": 1.0, "kept": True} for _ in range(case.nz)]
        if MODE == "mistyped":
            # Past the helper, which would refuse to send this.
            cp._send({"type": "result", "slices": [{"label": 1, "probability": "high"}] * case.nz})
            os._exit(0)
        if MODE == "crash":
            sys.stderr.write("about to crash: segmentation model exploded\n")
            sys.stderr.flush()
            os._exit(3)
        if MODE == "hang":
            time.sleep(3600)
        if MODE == "busy":
            for i in range(36000):
                cp.progress("busy", i, 36000)
                time.sleep(0.1)
        if MODE == "hog":
            held = []
            for i in range(20):
                held.append(bytearray(50 << 20))
                cp.progress("hog", i, 20)
                time.sleep(0.1)
        if MODE == "flaky":
            marker = sys.argv[2]
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(3)
            return [{"label": 0, "probability": 1.0, "kept": True} for _ in range(case.nz)]
        if MODE == "error" and len(sys.argv) > 2:
            with open(sys.argv[2], "a") as calls:
                calls.write("call\n")
        raise RuntimeError("label_slices is not implemented in this fixture")


if MODE == "garbage":
    sys.stdout.write("hello from a plugin that prints instead of speaking the protocol\n")
    sys.stdout.flush()
    time.sleep(3600)
elif MODE == "future":
    cp._out = sys.stdout.buffer
    cp._send({"type": "hello", "protocol": "clisc-process", "protocol_version": 2, "plugin": "misbehaving-future"})
    sys.stdin.read()
else:
    cp.serve(Misbehaving())
