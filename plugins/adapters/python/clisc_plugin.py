"""clisc_plugin: write a clisc pipeline stage in Python, outside the host.

A tiny, dependency-free implementation of the ``clisc-process`` protocol
(version 1, see docs/plugins-process.md). numpy is used when it is
installed (buffers arrive as numpy arrays); without it buffers arrive as
:class:`Array` objects (a flat ``array.array`` plus a shape).

Write a class with the identity attributes and the methods of your stage
kind, then hand an instance to :func:`serve`::

    import clisc_plugin as cp

    class MyLabeler:
        name = "my-labeler"
        kind = "pseudo-labeler"
        version = "0.1.0"
        description = "what it does"
        settings = [cp.setting("k", "float", 2.0, "threshold")]

        def configure(self, settings, context):
            self.k = settings["k"]

        def label_slices(self, case):
            return [{"label": 0, "probability": 1.0, "kept": True} for _ in range(case.nz)]

    cp.serve(MyLabeler())

Methods per kind (arrays: volumes ``[nz, ny, nx]``, images ``[h, w]``):

* pseudo-labeler: ``label_slices(case)`` -> one dict per slice
  ``{"label": 0|1, "probability": p, "kept": bool}`` (or a tuple in that order)
* roi-extractor: ``fit(cases)`` -> metrics dict; ``extract(case)`` -> list of
  ``{"name": str, "cam": float volume, "roi": 0/1 volume}``
* prompt-generator: ``prompts(case, roi)`` -> list of
  ``{"slice": z, "box": [x0, y0, x1, y1] or None, "points": [[x, y, 1|0], ...]}``
* promptable-segmenter: ``segment(image, prompts, info)`` -> one ``[h, w]`` 0/1
  mask per prompt dict ``{"box": ..., "points": ...}``
* volumetric-segmenter: ``train(cases)`` -> metrics dict; ``predict(case)`` ->
  0/1 volume; ``save(path)``, ``load(path)``. A ``train(cases, validation=None)``
  also receives the cases the pipeline holds out for model selection (each
  with ``target``); use them only to choose a checkpoint, and report the
  choice as ``selected_step`` and ``selected_validation_dice``
* filter: ``select(candidates)`` -> one ``{"score": s, "keep": bool}`` per candidate

Anything printed goes to stderr (stdout carries the protocol); use
:func:`log` and :func:`progress` to reach the host's log and progress bars.
An exception in a method is reported to the host as an error of that call;
the process keeps serving.
"""

import array
import inspect
import json
import os
import struct
import sys
import traceback

PROTOCOL = "clisc-process"
PROTOCOL_VERSION = 1
MAGIC = b"CLSC"

np = None
if os.environ.get("CLISC_PLUGIN_NUMPY", "1") != "0":
    try:
        import numpy as np  # noqa: F811
    except ImportError:
        np = None

_DTYPES = {"f32": ("f", "<f4", 4), "u8": ("B", "u1", 1)}
_out = None  # the real stdout (binary), set by serve()


class Array:
    """A buffer without numpy: ``data`` is a flat ``array.array`` in C order."""

    def __init__(self, dtype, shape, data):
        self.dtype, self.shape, self.data = dtype, tuple(shape), data

    def __len__(self):
        return self.shape[0] if self.shape else 0

    def slice(self, i):
        """Sub-array ``i`` along the first axis (a view-free copy)."""
        n = 1
        for d in self.shape[1:]:
            n *= d
        return Array(self.dtype, self.shape[1:], self.data[i * n:(i + 1) * n])


def setting(name, type, default=None, doc="", choices=None):
    """One entry of the settings schema. ``type``: float, integer, bool,
    string, float_list or string_list; ``default=None`` makes it required."""
    entry = {"name": name, "type": type, "default": default, "doc": doc}
    if choices:
        entry["choices"] = list(choices)
    return entry


class Case:
    """One case: ``id``, ``grid`` (shape [nx, ny, nz], spacing, affine),
    ``image`` (channel name -> float volume [nz, ny, nx]), ``brain_mask``,
    and for some calls ``labels`` (slice labels) or ``target``."""

    def __init__(self, header, buffers, prefix):
        self.id = header.get("id", "")
        self.grid = header.get("grid", {})
        self.nx, self.ny, self.nz = (self.grid.get("shape") or [0, 0, 0])
        self.image = {c: buffers[prefix + "image/" + c] for c in header.get("channels", [])}
        self.brain_mask = buffers.get(prefix + "brain_mask")
        self.labels = header.get("labels")
        self.target = buffers.get(prefix + "target")


def log(message):
    """A log line in the host's log."""
    _send({"type": "log", "message": str(message)})


def progress(task, done, total, message=""):
    """Progress of a long step (drawn as a progress bar by the host)."""
    _send({"type": "progress", "task": str(task), "done": int(done), "total": int(total),
           "message": str(message)})


# ------------------------------------------------------------------ framing

def _read_exact(stream, n):
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_frame(stream):
    prefix = _read_exact(stream, 16)
    if prefix is None:
        return None
    if prefix[:4] != MAGIC:
        raise ValueError("frame without the CLSC magic: %r" % prefix)
    header_len, payload_len = struct.unpack("<IQ", prefix[4:])
    header = json.loads(_read_exact(stream, header_len).decode("utf-8"))
    buffers = {}
    for spec in header.pop("buffers", None) or []:
        code, np_dtype, size = _DTYPES[spec["dtype"]]
        count = 1
        for d in spec["shape"]:
            count *= d
        raw = _read_exact(stream, count * size)
        if np is not None:
            buffers[spec["name"]] = np.frombuffer(raw, dtype=np_dtype).reshape(spec["shape"])
        else:
            data = array.array(code)
            data.frombytes(raw)
            if sys.byteorder != "little" and size > 1:
                data.byteswap()
            buffers[spec["name"]] = Array(spec["dtype"], spec["shape"], data)
    return header, buffers


def _encode(name, value, dtype, shape=None):
    """(spec, bytes) of one buffer from a numpy array, an Array, or a flat
    sequence with an explicit shape."""
    code, np_dtype, _ = _DTYPES[dtype]
    if np is not None and isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value.astype(np_dtype, copy=False))
        return {"name": name, "dtype": dtype, "shape": list(value.shape)}, value.tobytes()
    if isinstance(value, Array):
        shape, flat = value.shape, value.data
    else:
        if shape is None:
            raise ValueError("buffer %r: a plain sequence needs a shape" % name)
        flat = value
    data = array.array(code, [(float(v) if code == "f" else int(v)) for v in flat])
    if sys.byteorder != "little" and code == "f":
        data.byteswap()
    return {"name": name, "dtype": dtype, "shape": list(shape)}, data.tobytes()


def _send(header, buffers=()):
    specs, payload = [], []
    for spec, raw in buffers:
        specs.append(spec)
        payload.append(raw)
    if specs:
        header = dict(header, buffers=specs)
    head = json.dumps(header).encode("utf-8")
    body = b"".join(payload)
    _out.write(MAGIC + struct.pack("<IQ", len(head), len(body)) + head + body)
    _out.flush()


# ------------------------------------------------------------------ dispatch

def _slice_label(z, value):
    if isinstance(value, dict):
        label, p, kept = value["label"], value["probability"], value.get("kept", True)
    else:
        label, p = value[0], value[1]
        kept = value[2] if len(value) > 2 else True
    return {"index": z, "label": int(bool(label)), "probability": float(p), "kept": bool(kept)}


def _volume_shape(case):
    return [case.nz, case.ny, case.nx]


def _call(plugin, header, buffers):
    method = header.get("method")
    if method == "label_slices":
        case = Case(header["case"], buffers, "")
        slices = [_slice_label(z, v) for z, v in enumerate(plugin.label_slices(case))]
        return {"slices": slices}, []
    if method == "fit":
        cases = [Case(h, buffers, "case%d/" % i) for i, h in enumerate(header["cases"])]
        return {"metrics": plugin.fit(cases) or {}}, []
    if method == "extract":
        case = Case(header["case"], buffers, "")
        rounds, out = plugin.extract(case), []
        for i, r in enumerate(rounds):
            out.append(_encode("round%d/cam" % i, r["cam"], "f32", _volume_shape(case)))
            out.append(_encode("round%d/roi" % i, r["roi"], "u8", _volume_shape(case)))
        return {"rounds": [{"name": r.get("name", "round%d" % i)} for i, r in enumerate(rounds)]}, out
    if method == "prompts":
        case = Case(header["case"], buffers, "")
        return {"sets": list(plugin.prompts(case, buffers["roi"]))}, []
    if method == "segment":
        image = buffers["image"]
        h, w, c = image.shape
        if c == 1:
            image = image.reshape(h, w) if np is not None else Array("f32", (h, w), image.data)
        info = {"case_id": header.get("case_id"), "index": header.get("index")}
        masks = list(plugin.segment(image, header.get("prompts", []), info))
        if np is not None:
            stacked = np.stack([np.asarray(m, dtype="u1").reshape(h, w) for m in masks]) if masks \
                else np.zeros((0, h, w), dtype="u1")
            return {}, [_encode("masks", stacked, "u8")]
        flat = []
        for m in masks:
            flat.extend(m.data if isinstance(m, Array) else m)
        return {}, [_encode("masks", flat, "u8", [len(masks), h, w])]
    if method == "train":
        cases = [Case(h, buffers, "case%d/" % i) for i, h in enumerate(header["cases"])]
        if "validation" in header:
            held_out = [Case(h, buffers, "valid%d/" % i) for i, h in enumerate(header["validation"])]
            if "validation" in inspect.signature(plugin.train).parameters:
                return {"metrics": plugin.train(cases, validation=held_out) or {}}, []
        return {"metrics": plugin.train(cases) or {}}, []
    if method == "predict":
        case = Case(header["case"], buffers, "")
        return {}, [_encode("labels", plugin.predict(case), "u8", _volume_shape(case))]
    if method in ("save", "load"):
        getattr(plugin, method)(header["path"])
        return {}, []
    if method == "select":
        cands = []
        for i, h in enumerate(header["candidates"]):
            cands.append({"case_id": h["case_id"], "grid": h.get("grid"),
                          "pseudo_label": buffers["candidate%d/pseudo_label" % i],
                          "reference": buffers["candidate%d/reference" % i]})
        decisions = [{"score": float(d["score"]), "keep": bool(d["keep"])} for d in plugin.select(cands)]
        return {"decisions": decisions}, []
    raise ValueError("unknown method %r" % method)


def serve(plugin):
    """Runs the protocol on stdin/stdout until the host says ``shutdown``
    or closes stdin."""
    global _out
    _out = sys.stdout.buffer
    sys.stdout = sys.stderr  # print() must never corrupt the protocol stream
    stdin = sys.stdin.buffer
    _send({
        "type": "hello",
        "protocol": PROTOCOL,
        "protocol_version": PROTOCOL_VERSION,
        "plugin": {
            "name": plugin.name,
            "kind": plugin.kind,
            "version": getattr(plugin, "version", "0.0.0"),
            "description": getattr(plugin, "description", ""),
        },
        "settings": list(getattr(plugin, "settings", [])),
    })
    while True:
        frame = _read_frame(stdin)
        if frame is None:
            return
        header, buffers = frame
        kind = header.get("type")
        if kind == "shutdown":
            return
        try:
            if kind == "configure":
                if hasattr(plugin, "configure"):
                    plugin.configure(header.get("settings", {}), header.get("context", {}))
                _send({"type": "ready"})
            elif kind == "call":
                reply, out = _call(plugin, header, buffers)
                reply["type"] = "result"
                _send(reply, out)
            else:
                _send({"type": "error", "message": "unknown frame type %r" % kind})
        except Exception as exc:  # reported to the host, the process keeps serving
            _send({"type": "error", "message": "%s: %s" % (type(exc).__name__, exc),
                   "details": traceback.format_exc()})
