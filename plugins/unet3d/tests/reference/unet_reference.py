"""Plain-PyTorch reference of the CLISC 3D U-Net, for `tests/pytorch_parity.rs`.

Written from the architecture of `unet_3D` in the CLISC reference code
(SSL4MIS / Attention-Gated-Networks family), generalised to any number of
levels; nothing here comes from the Rust side:

* `conv{i}` (i = 1..L-1): `UnetConv3`, two `Conv3d(3x3x3, padding 1) ->
  InstanceNorm3d (affine=False) -> ReLU`, each an `nn.Sequential` named
  `conv1` / `conv2`; each encoder level is followed by `MaxPool3d(2)`;
* `center`: a `UnetConv3` on the last pooled map, then `dropout1`;
* `up_concat{i}` (i = L-1..1): `UnetUp3_CT`, `nn.Upsample(scale_factor=2,
  mode="trilinear")` of the coarser map, `F.pad` of the skip by the size
  offset (0 for valid sizes), `cat([skip, up], 1)`, then a `UnetConv3`
  named `conv`;
* `dropout2`, then `final`, a 1x1x1 `Conv3d` to the classes.

Usage:

    unet_reference.py CASE_DIR [CASE_DIR ...]

Each CASE_DIR holds `config.json` (`in_channels`, `classes`, `features`),
`weights.safetensors` (a state dict; loaded with `strict=True`, so every
name and shape must match this module) and `input.safetensors` (tensor
`input`, `[B, C, D, H, W]`). The script writes `output.safetensors` with
the eval-mode `logits` and, as metadata, the module's parameter count and
its state-dict names (comma-separated, sorted).
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


class UnetConv3(nn.Module):
    def __init__(self, in_size, out_size):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv3d(in_size, out_size, kernel_size=3, stride=1, padding=1),
            nn.InstanceNorm3d(out_size),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            nn.Conv3d(out_size, out_size, kernel_size=3, stride=1, padding=1),
            nn.InstanceNorm3d(out_size),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.conv2(self.conv1(x))


class UnetUp3_CT(nn.Module):
    def __init__(self, in_size, out_size):
        super().__init__()
        self.conv = UnetConv3(in_size + out_size, out_size)
        self.up = nn.Upsample(scale_factor=(2, 2, 2), mode="trilinear")

    def forward(self, inputs1, inputs2):
        outputs2 = self.up(inputs2)
        offset = outputs2.size()[2] - inputs1.size()[2]
        padding = 2 * [offset // 2, offset // 2, 0]
        outputs1 = F.pad(inputs1, padding)
        return self.conv(torch.cat([outputs1, outputs2], 1))


class UNet3D(nn.Module):
    def __init__(self, in_channels, classes, features, dropout=0.3):
        super().__init__()
        assert len(features) >= 2
        self.levels = len(features) - 1
        cin = in_channels
        for i in range(self.levels):
            self.add_module(f"conv{i + 1}", UnetConv3(cin, features[i]))
            self.add_module(f"maxpool{i + 1}", nn.MaxPool3d(kernel_size=(2, 2, 2)))
            cin = features[i]
        self.center = UnetConv3(features[self.levels - 1], features[self.levels])
        for i in range(self.levels, 0, -1):
            self.add_module(f"up_concat{i}", UnetUp3_CT(features[i], features[i - 1]))
        self.final = nn.Conv3d(features[0], classes, 1)
        self.dropout1 = nn.Dropout(p=dropout)
        self.dropout2 = nn.Dropout(p=dropout)

    def forward(self, x):
        skips = []
        for i in range(1, self.levels + 1):
            x = getattr(self, f"conv{i}")(x)
            skips.append(x)
            x = getattr(self, f"maxpool{i}")(x)
        x = self.dropout1(self.center(x))
        for i in range(self.levels, 0, -1):
            x = getattr(self, f"up_concat{i}")(skips[i - 1], x)
        return self.final(self.dropout2(x))


def run_case(case: Path) -> None:
    cfg = json.loads((case / "config.json").read_text())
    net = UNet3D(cfg["in_channels"], cfg["classes"], cfg["features"])
    state = load_file(str(case / "weights.safetensors"))
    # strict=True: missing or unexpected names and wrong shapes all raise.
    net.load_state_dict(state, strict=True)
    net.eval()
    x = load_file(str(case / "input.safetensors"))["input"]
    with torch.no_grad():
        logits = net(x).contiguous()
    names = sorted(net.state_dict().keys())
    count = sum(p.numel() for p in net.parameters())
    save_file(
        {"logits": logits},
        str(case / "output.safetensors"),
        metadata={"param_count": str(count), "names": ",".join(names)},
    )
    print(f"{case.name}: features {cfg['features']}, input {list(x.shape)}, "
          f"logits {list(logits.shape)}, {count} parameters")


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        run_case(Path(arg))


if __name__ == "__main__":
    main()
