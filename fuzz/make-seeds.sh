#!/usr/bin/env bash
# Regenerates the committed seed corpora in fuzz/seeds/ (small files):
#   nifti/             NIfTI-1 files of several data types, byte orders and
#                      header variants (.nii and .nii.gz), written with nibabel
#   dicom/             pairs of files of each series kind of
#                      host/cli/tests/reference/dicom/make_series.py, joined by the
#                      separator fuzz_targets/dicom.rs splits on
#   pipeline_toml/     the shipped pipelines (configs/*.toml)
#   process_protocol/  clisc-process frames as docs/plugins-process.md defines them
# Needs the project's Python environment (source scripts/env.sh first).
set -euo pipefail
cd "$(dirname "$0")"
seeds="$PWD/seeds"
rm -rf "$seeds"
mkdir -p "$seeds"/{nifti,dicom,pipeline_toml,process_protocol}

cp ../configs/*.toml "$seeds/pipeline_toml/"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python ../host/cli/tests/reference/dicom/make_series.py "$work/series" >/dev/null
python - "$work/series" "$seeds" <<'PY'
import gzip, io, json, os, struct, sys
import nibabel as nib
import numpy as np

series, seeds = sys.argv[1], sys.argv[2]
sep = b"--clisc-fuzz-next-file--"
for kind in sorted(os.listdir(series)):
    d = os.path.join(series, kind)
    if not os.path.isdir(d) or kind == "study":
        continue
    files = sorted(os.listdir(d))[:2]
    parts = [open(os.path.join(d, f), "rb").read() for f in files]
    open(os.path.join(seeds, "dicom", kind), "wb").write(sep.join(parts))

rng = np.random.default_rng(11)
affine = np.array([[-1.0, 0, 0, 12], [0, 1.2, 0, -7], [0, 0, 2.5, 3], [0, 0, 0, 1]])
def save(name, img):
    bio = io.BytesIO()
    img.to_file_map({"image": nib.FileHolder(fileobj=bio)})
    raw = bio.getvalue()
    open(os.path.join(seeds, "nifti", name + ".nii"), "wb").write(raw)
    open(os.path.join(seeds, "nifti", name + ".nii.gz"), "wb").write(gzip.compress(raw, mtime=0))
for dtype in ["uint8", "int8", "int16", "uint16", "int32", "float32", "float64", "int64"]:
    data = (rng.random((5, 4, 3)) * 100).astype(dtype)
    save(dtype, nib.Nifti1Image(data, affine, dtype=dtype))
be = nib.Nifti1Image(rng.random((4, 3, 2)).astype(">f4"), affine)
save("big_endian", be)
scaled = nib.Nifti1Image(rng.integers(0, 50, (4, 4, 2)).astype("int16"), affine)
scaled.header.set_slope_inter(0.5, -3)
save("scaled", scaled)
qonly = nib.Nifti1Image(rng.random((3, 3, 3)).astype("float32"), None)
qonly.header.set_qform(affine, 1)
qonly.header.set_sform(None, 0)
save("qform_only", qonly)
ext = nib.Nifti1Image(np.ones((2, 2, 2), "uint8"), affine)
ext.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"comment"))
save("extension", ext)
save("four_d", nib.Nifti1Image(np.zeros((2, 2, 2, 2), "float32"), affine))
save("two_d", nib.Nifti1Image(np.zeros((3, 2), "uint8"), affine))

def frame(header, buffers=()):
    payload = b"".join(data for _, _, _, data in buffers)
    if buffers:
        header = dict(header, buffers=[{"name": n, "dtype": t, "shape": s} for n, t, s, _ in buffers])
    h = json.dumps(header).encode()
    return b"CLSC" + struct.pack("<IQ", len(h), len(payload)) + h + payload
proto = os.path.join(seeds, "process_protocol")
open(os.path.join(proto, "hello"), "wb").write(frame({"type": "hello", "protocol": "clisc-process", "version": 1}))
vol = rng.random((2, 3, 4)).astype("<f4").tobytes()
mask = (rng.random((2, 3, 4)) > 0.5).astype("u1").tobytes()
open(os.path.join(proto, "case"), "wb").write(frame(
    {"type": "call", "method": "label_slices", "case": {"id": "c1", "spacing": [1, 1, 2]}},
    [("image/flair", "f32", [2, 3, 4], vol), ("brain_mask", "u8", [2, 3, 4], mask)]))
open(os.path.join(proto, "two_frames"), "wb").write(
    frame({"type": "ok", "result": [{"label": 1, "probability": 0.75}]})
    + frame({"type": "error", "kind": "input", "message": "bad"}))
PY
ls -R "$seeds" | wc -l
