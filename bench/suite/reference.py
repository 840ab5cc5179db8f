"""The reference side of the benchmark suite: the tools a lab would use.

Same tasks, arguments and JSON output as the clisc side
(`host/cli/examples/bench_suite.rs`); `bench/suite/suite.py` runs both on the
same inputs and thread count, alternating fresh processes.

    reference.py nifti nibabel|sitk CASE_DIR OUT_DIR ITERS
    reference.py dicom DIR ITERS               pydicom + numpy stacking
    reference.py metrics PRED REF ITERS        MedPy dc and hd95
    reference.py clip WEIGHTS THREADS ITERS BATCH [cuda]   OpenAI CLIP (clip-anytorch)
    reference.py sam WEIGHTS THREADS ITERS [cuda]     Meta's SamPredictor
    reference.py sam2 WEIGHTS THREADS ITERS [cuda]    sam2 1.1.0 image encoder + video propagation
    reference.py unet X,Y,Z THREADS ITERS F1,F2,.. [cuda]  MONAI sliding_window_inference
    reference.py unet-train X,Y,Z THREADS STEPS F1,F2,.. BATCH fp32|amp [cuda]
                                               training steps, torch.optim.SGD (amp: fp16 autocast + GradScaler)
    reference.py cam-train SIZE,SLICES THREADS ITERS BATCH [cuda]  torchvision ResNet-18 training epoch

Parity tasks (`bench/gpu/gpu.py`): the outputs, not the seconds, of the
official code on the inputs of the clisc side, written as safetensors:

    reference.py sam-parity WEIGHTS THREADS OUT.safetensors [cuda]   embedding, low_res, iou
    reference.py clip-parity WEIGHTS THREADS OUT.safetensors BATCH [cuda]   features
    reference.py unet-parity F1,F2,.. THREADS CASE_DIR [cuda]   CASE_DIR/reference.safetensors: logits

The model tasks run on the CPU unless `cuda` is given last (then on the
first CUDA device, each timed phase ending with torch.cuda.synchronize()).

Loading weights and inputs happens before the clock starts; every timed
phase produces the same result as its clisc counterpart (f32 voxels scaled
by the header, Dice and HD95 with the header's spacing, features, masks,
probabilities).
"""

import glob
import json
import os
import sys
import time

import numpy as np

MODALITIES = ("t1", "t1ce", "t2", "flair")


def timed(timings, phase, iters, fn):
    """Runs fn() iters times, appending each run's seconds to timings[phase]."""
    out = None
    for _ in range(iters):
        t = time.perf_counter()
        out = fn()
        timings.setdefault(phase, []).append(round(time.perf_counter() - t, 5))
    return out


def modality_files(case_dir):
    files = []
    for m in MODALITIES:
        hits = [f for f in sorted(glob.glob(os.path.join(case_dir, "*")))
                if f.endswith(f"_{m}.nii.gz") or f.endswith(f"_{m}.nii")]
        if not hits:
            raise SystemExit(f"no {m} file in {case_dir}")
        files.append(hits[0])
    return files


def nifti(backend, case_dir, out_dir, iters):
    """Reads the four modalities as float32 arrays and writes them back as float32."""
    files = modality_files(case_dir)
    os.makedirs(out_dir, exist_ok=True)
    t = {}
    if backend == "nibabel":
        import nibabel as nib

        def read_all():
            out = []
            for f in files:
                img = nib.load(f, mmap=False)  # read the voxels now, not lazily
                out.append((f, img.get_fdata(dtype=np.float32), img.affine, img.header))
            return out

        vols = timed(t, "read", iters, read_all)

        def write():
            for f, data, affine, header in vols:
                img = nib.Nifti1Image(data, affine, header)
                img.set_data_dtype(np.float32)
                nib.save(img, os.path.join(out_dir, os.path.basename(f)))

        timed(t, "write", iters, write)
    elif backend == "sitk":
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)

        def read_all():
            return [(f, sitk.Cast(sitk.ReadImage(f), sitk.sitkFloat32)) for f in files]

        vols = timed(t, "read", iters, read_all)

        def write():
            for f, img in vols:
                sitk.WriteImage(img, os.path.join(out_dir, os.path.basename(f)), useCompression=f.endswith(".gz"))

        timed(t, "write", iters, write)
    else:
        raise SystemExit(f"unknown NIfTI backend {backend}")
    return t


def dicom(dir_, iters):
    """pydicom: reads every file, groups by series, sorts the slices along
    the normal of their orientation and stacks the rescaled pixels."""
    import pydicom

    def load():
        series = {}
        for root, _, names in os.walk(dir_):
            for n in names:
                ds = pydicom.dcmread(os.path.join(root, n))
                series.setdefault(ds.SeriesInstanceUID, []).append(ds)
        vols = []
        for slices in series.values():
            o = np.array(slices[0].ImageOrientationPatient, dtype=np.float64)
            normal = np.cross(o[:3], o[3:])
            slices.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=np.float64))))
            vol = np.stack([d.pixel_array.astype(np.float32) * np.float32(d.get("RescaleSlope", 1.0))
                            + np.float32(d.get("RescaleIntercept", 0.0)) for d in slices])
            vols.append(vol)
        return vols

    t = {}
    timed(t, "load", iters, load)
    return t


def metrics(pred, ref, iters):
    import nibabel as nib
    from medpy.metric.binary import dc, hd95

    p = nib.load(pred)
    r = nib.load(ref)
    pa = np.asarray(p.dataobj) > 0
    ra = np.asarray(r.dataobj) > 0
    spacing = tuple(float(v) for v in r.header.get_zooms()[:3])
    t = {}
    timed(t, "dice", iters, lambda: dc(pa, ra))
    timed(t, "hd95", iters, lambda: hd95(pa, ra, voxelspacing=spacing))
    return t


def ramp(shape):
    import torch

    n = int(np.prod(shape))
    return (torch.arange(n, dtype=torch.float32).remainder(4001.0) / 1000.0 - 2.0).view(*shape)


def synced(fn, device):
    """fn followed by a device synchronisation on CUDA."""
    import torch

    def run():
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def clip(weights, iters, batch, device):
    import torch
    from clip.model import build_model

    model = build_model(torch.load(weights, map_location="cpu")).float().eval().to(device)
    x = ramp((batch, 3, 224, 224)).to(device)
    t = {}
    with torch.no_grad():
        float(model.encode_image(x).sum())  # warm-up
        timed(t, "encode", iters, synced(lambda: float(model.encode_image(x).sum()), device))
    return t


def sam(weights, iters, device):
    import torch
    from segment_anything import SamPredictor, sam_model_registry

    predictor = SamPredictor(sam_model_registry["vit_b"](checkpoint=weights).eval().to(device))
    w = h = 240
    rgb = ((np.arange(w * h * 3) * 7) % 251).astype(np.uint8).reshape(h, w, 3)
    box = np.array([60.0, 70.0, 150.0, 170.0])
    t = {}
    with torch.no_grad():
        predictor.set_image(rgb)  # warm-up
        predictor.predict(box=box, multimask_output=True)

        def embed():
            predictor.set_image(rgb)
            return float(predictor.features.sum())

        timed(t, "embed", iters, synced(embed, device))
        timed(t, "decode", iters, synced(lambda: predictor.predict(box=box, multimask_output=True), device))
    return t


def sam2(weights, iters, device):
    """SAM 2.1 Hiera-tiny: SAM2ImagePredictor.set_image on one 240x240
    slice, and the video predictor propagating a box on the first of 8
    slices through the others (frames handed over as tensors, transformed
    as the image predictor does, outside the clock)."""
    import torch
    import sam2.sam2_video_predictor as video_module
    from sam2.build_sam import build_sam2, build_sam2_video_predictor
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    config = "configs/sam2.1/sam2.1_hiera_t.yaml"
    predictor = SAM2ImagePredictor(build_sam2(config, ckpt_path=weights, device=device))
    video = build_sam2_video_predictor(config, ckpt_path=weights, device=device)
    slices = [((np.arange(240 * 240 * 3) * 7 + k * 13) % 251).astype(np.uint8).reshape(240, 240, 3) for k in range(8)]
    frames = torch.stack([predictor._transforms(s) for s in slices])
    video_module.load_video_frames = lambda **_: (frames, 240, 240)
    box = np.array([60.0, 70.0, 150.0, 170.0], np.float32)
    t = {}

    def propagate():
        state = video.init_state(video_path="frames-in-memory")
        video.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=box)
        for _ in video.propagate_in_video(state, start_frame_idx=0):
            pass

    with torch.inference_mode():
        predictor.set_image(slices[0])  # warm-up

        def encode():
            predictor.set_image(slices[0])
            return float(predictor._features["image_embed"].sum())

        timed(t, "encode", iters, synced(encode, device))
        timed(t, "propagate, per slice", iters, synced(propagate, device))
    t["propagate, per slice"] = [v / 8 for v in t["propagate, per slice"]]
    return t


def unet_module(features):
    """The CLISC 3D U-Net (UnetConv3 blocks: Conv3d 3x3x3 -> InstanceNorm3d ->
    ReLU twice; max-pool; trilinear up-sampling and concatenation; 1x1x1
    final conv, 2 classes), the network `unet3d` builds, in plain PyTorch."""
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout), nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout), nn.ReLU(inplace=True))

    class UNet3d(nn.Module):
        def __init__(self):
            super().__init__()
            levels = len(features) - 1
            self.enc = nn.ModuleList()
            cin = 1
            for f in features[:levels]:
                self.enc.append(block(cin, f))
                cin = f
            self.center = block(cin, features[levels])
            self.dec = nn.ModuleList(block(features[i + 1] + features[i], features[i]) for i in range(levels))
            self.final = nn.Conv3d(features[0], 2, 1)
            self.drop = nn.Dropout(0.3)

        def forward(self, x):
            skips = []
            for e in self.enc:
                x = e(x)
                skips.append(x)
                x = nn.functional.max_pool3d(x, 2)
            x = self.drop(self.center(x))
            for d, s in reversed(list(zip(self.dec, skips))):
                up = nn.functional.interpolate(x, size=s.shape[2:], mode="trilinear", align_corners=False)
                x = d(torch.cat([s, up], 1))
            return self.final(self.drop(x))

    return UNet3d().eval()


def unet(dims, iters, features, device):
    """MONAI sliding_window_inference with the paper's window (64^3),
    overlap 0.5, Gaussian weighting (sigma 1/8 of the window) and two
    windows per forward pass, then the foreground softmax probability."""
    import torch
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    net = unet_module(features).to(device)
    nx, ny, nz = dims
    image = ramp((1, 1, nz, ny, nx)).to(device)

    def predictor(x):
        return torch.softmax(net(x), 1)[:, 1:2]

    def infer():
        p = sliding_window_inference(image, (64, 64, 64), 2, predictor, overlap=0.5, mode="gaussian",
                                     sigma_scale=0.125, padding_mode="constant", cval=-2.0)
        return p.cpu().numpy()

    t = {}
    with torch.no_grad():
        timed(t, "infer", iters, synced(infer, device))
    return t


def unet_train(patch, steps, features, batch, precision, device):
    """Training steps of the same network: forward in training mode
    (dropout), cross-entropy + (1 - soft Dice of the foreground) as
    `unet3d`'s `dice_ce`, backward, torch.optim.SGD with `unet3d`'s
    default learning rate, momentum and weight decay, on one fixed batch;
    the first two steps are warm-up and not reported. With `amp` (CUDA
    only) the forward runs under fp16 autocast, the loss in fp32 on the
    float logits, and a GradScaler scales the loss, as `unet3d` does with
    `mixed_precision`."""
    import torch

    amp = precision == "amp"
    if amp and device != "cuda":
        raise SystemExit("unet-train: amp needs cuda")
    scaler = torch.amp.GradScaler("cuda") if amp else None

    torch.manual_seed(0)
    net = unet_module(features).to(device).train()
    px, py, pz = patch
    x = ramp((batch, 1, pz, py, px)).to(device)
    y = (x > 1.0).long().squeeze(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step():
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            logits = net(x)
        logits = logits.float()
        ce = torch.nn.functional.cross_entropy(logits, y)
        p = torch.softmax(logits, 1)[:, 1]
        t = y.float()
        dice = (2 * (p * t).sum() + 1e-5) / (p.sum() + t.sum() + 1e-5)
        loss = ce - dice + 1.0
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return loss.item()

    t = {}
    timed(t, "warm-up", 2, synced(step, device))
    timed(t, "train step", steps, synced(step, device))
    del t["warm-up"]
    return t


def cam_slices(size, n):
    """The slices `bench_suite cam-train` trains on (same values)."""
    import torch

    ramp = (torch.arange(n * size * size, dtype=torch.float32) % 997.0 / 997.0).view(n, 1, size, size)
    labels = torch.arange(n) % 3 == 0
    c = torch.arange(size, dtype=torch.float32) - size / 2.0
    disc = ((c.view(1, -1) ** 2 + c.view(-1, 1) ** 2) <= size * size // 25).view(1, 1, size, size)
    bright = disc & labels.view(-1, 1, 1, 1)
    images = torch.where(bright, torch.ones_like(ramp), ramp)
    return images, labels.long()


def cam_train(size, n, iters, batch, device):
    """One training epoch of torchvision's ResNet-18 with the CAM
    classifier's head (fc.0 Linear 512->256, ReLU, Dropout 0.5, fc.3
    Linear 256->2), ImageNet-normalised grey slices repeated on 3
    channels, random horizontal and vertical flips, cross-entropy weighted
    by inverse class frequency, Adam (lr 1e-4), as clisc's `cam` trains;
    timed with building the network and saving its state dict, as clisc
    saves a checkpoint after every epoch."""
    import tempfile

    import torch
    import torchvision
    from torch import nn

    images, labels = cam_slices(size, n)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).to(device)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1).to(device)
    pos = int(labels.sum())
    weight = torch.tensor([n / (2.0 * (n - pos)), n / (2.0 * pos)]).to(device)
    out_dir = tempfile.mkdtemp()

    def epoch():
        torch.manual_seed(0)
        net = torchvision.models.resnet18()
        net.fc = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 2))
        net = net.to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        order = torch.randperm(n)
        correct = 0
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            if len(idx) < 2:
                continue
            grey = images[idx]
            fh = torch.rand(len(idx)) < 0.5
            fv = torch.rand(len(idx)) < 0.5
            grey = torch.where(fh.view(-1, 1, 1, 1), grey.flip(3), grey)
            grey = torch.where(fv.view(-1, 1, 1, 1), grey.flip(2), grey)
            x = (grey.to(device).expand(-1, 3, -1, -1) - mean) / std
            y = labels[idx].to(device)
            logits = net(x)
            loss = nn.functional.cross_entropy(logits, y, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
            correct += int((logits.argmax(-1) == y).sum())
        torch.save(net.state_dict(), os.path.join(out_dir, "classifier.pt"))
        return correct

    t = {}
    timed(t, "train epoch", iters, synced(epoch, device))
    return t


def sam_parity(weights, out, device):
    """The `sam` task's slice and box through Meta's SamPredictor: the image
    embedding and the three low-resolution mask logits and IoU scores."""
    import torch
    from safetensors.torch import save_file
    from segment_anything import SamPredictor, sam_model_registry

    predictor = SamPredictor(sam_model_registry["vit_b"](checkpoint=weights).eval().to(device))
    w = h = 240
    rgb = ((np.arange(w * h * 3) * 7) % 251).astype(np.uint8).reshape(h, w, 3)
    with torch.no_grad():
        predictor.set_image(rgb)
        _, iou, low_res = predictor.predict(box=np.array([60.0, 70.0, 150.0, 170.0]), multimask_output=True)
        save_file({"embedding": predictor.features.float().cpu().contiguous(),
                   "low_res": torch.from_numpy(low_res).float().contiguous(),
                   "iou": torch.from_numpy(iou).float().contiguous()}, out)


def clip_parity(weights, out, batch, device):
    """OpenAI CLIP's image features of the `clip` task's ramp batch."""
    import torch
    from clip.model import build_model
    from safetensors.torch import save_file

    model = build_model(torch.load(weights, map_location="cpu")).float().eval().to(device)
    with torch.no_grad():
        features = model.encode_image(ramp((batch, 3, 224, 224)).to(device))
    save_file({"features": features.float().cpu().contiguous()}, out)


def unet_parity(case_dir, device):
    """The eval-mode logits of the plain-PyTorch U-Net of the parity test
    (`plugins/unet3d/tests/reference/unet_reference.py`) with the weights
    and input the clisc side saved in `case_dir`."""
    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins", "unet3d",
                                    "tests", "reference"))
    from unet_reference import UNet3D

    cfg = json.load(open(os.path.join(case_dir, "config.json")))
    net = UNet3D(cfg["in_channels"], cfg["classes"], cfg["features"])
    net.load_state_dict(load_file(os.path.join(case_dir, "weights.safetensors")), strict=True)
    net = net.eval().to(device)
    x = load_file(os.path.join(case_dir, "input.safetensors"))["input"].to(device)
    with torch.no_grad():
        logits = net(x)
    save_file({"logits": logits.float().cpu().contiguous()}, os.path.join(case_dir, "reference.safetensors"))


def parity(a, device):
    """The parity tasks; they print no timings."""
    task = a[0]
    if task == "sam-parity":
        sam_parity(a[1], a[3], device)
    elif task == "clip-parity":
        clip_parity(a[1], a[3], int(a[4]), device)
    else:
        unet_parity(a[3], device)
    print(json.dumps({"task": task, "impl": "reference", "written": True}))


def main():
    a = sys.argv[1:]
    task = a[0] if a else ""
    device = "cuda" if a and a[-1] == "cuda" else "cpu"
    if task in ("clip", "sam", "sam2", "unet", "unet-train", "cam-train", "sam-parity", "clip-parity", "unet-parity"):
        import torch

        torch.set_num_threads(int(a[2]))
        torch.set_num_interop_threads(1)
    if task in ("sam-parity", "clip-parity", "unet-parity"):
        parity(a, device)
        return
    if task == "nifti":
        t = nifti(a[1], a[2], a[3], int(a[4]))
    elif task == "dicom":
        t = dicom(a[1], int(a[2]))
    elif task == "metrics":
        t = metrics(a[1], a[2], int(a[3]))
    elif task == "clip":
        t = clip(a[1], int(a[3]), int(a[4]), device)
    elif task == "sam":
        t = sam(a[1], int(a[3]), device)
    elif task == "sam2":
        t = sam2(a[1], int(a[3]), device)
    elif task == "unet":
        t = unet([int(v) for v in a[1].split(",")], int(a[3]), [int(v) for v in a[4].split(",")], device)
    elif task == "cam-train":
        size, n = (int(v) for v in a[1].split(","))
        t = cam_train(size, n, int(a[3]), int(a[4]), device)
    elif task == "unet-train":
        t = unet_train([int(v) for v in a[1].split(",")], int(a[3]), [int(v) for v in a[4].split(",")],
                       int(a[5]), a[6], device)
    else:
        raise SystemExit(__doc__)
    print(json.dumps({"task": task, "impl": "reference", "seconds": t}))


if __name__ == "__main__":
    main()
