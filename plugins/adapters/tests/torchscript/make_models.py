"""Builds the small TorchScript models the adapter tests run.

usage: make_models.py OUT_DIR

Each model is a real (if tiny) network with hand-set weights so that the
expected outputs are known exactly; together they cover scripting and
tracing, single- and multi-channel outputs, logits / probabilities / masks,
and both prompt encodings.
"""

import os
import sys

import torch
import torch.nn as nn

torch.manual_seed(0)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)


class BrightSliceClassifier(nn.Module):
    """[B, C, H, W] -> [B, 2] logits: tumour when more than 1% of the pixels exceed 2.0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fraction = (x[:, 0] > 2.0).float().mean(dim=(1, 2))
        score = (fraction - 0.01) * 100.0
        return torch.stack([-score, score], dim=1)


class BoxPointsSegmenter(nn.Module):
    """forward(image [1,C,H,W], box [1,4], points [1,N,3]) -> [1,1,H,W] logits.

    Bright pixels (> 0.5) inside the box; without a box (all -1), bright
    pixels within 3 pixels of a positive point."""

    def forward(self, image: torch.Tensor, box: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[2], image.shape[3]
        ys = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
        xs = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
        if bool(box[0, 0] >= 0):
            region = (xs >= box[0, 0]) & (xs <= box[0, 2]) & (ys >= box[0, 1]) & (ys <= box[0, 3])
        else:
            region = torch.zeros(h, w, dtype=torch.bool)
            for i in range(points.shape[1]):
                if bool(points[0, i, 2] > 0.5):
                    d = (xs - points[0, i, 0]) ** 2 + (ys - points[0, i, 1]) ** 2
                    region = region | (d <= 9.0)
        logits = torch.where(region, (image[0, 0] - 0.5) * 20.0, torch.full((h, w), -10.0))
        return logits.view(1, 1, h, w)


class PromptChannelSegmenter(nn.Module):
    """[1, 1 + 2, H, W] (image, box mask, point map) -> ([1, H, W] probabilities, iou score)."""

    def forward(self, x: torch.Tensor):
        prob = torch.sigmoid((x[:, 0] - 0.5) * 20.0) * x[:, 1]
        return prob, prob.mean()


class VoxelClassifier(nn.Module):
    """A 1x1x1 Conv3d with two output classes: class 1 where x > 2."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv3d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1))
            self.head.bias.copy_(torch.tensor([2.0, -2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


torch.jit.script(BrightSliceClassifier()).save(os.path.join(out, "labeler.pt"))
torch.jit.script(BoxPointsSegmenter()).save(os.path.join(out, "box_points.pt"))
torch.jit.trace(PromptChannelSegmenter(), torch.rand(1, 3, 12, 16)).save(os.path.join(out, "prompt_channels.pt"))
torch.jit.trace(VoxelClassifier().eval(), torch.rand(1, 1, 4, 4, 4)).save(os.path.join(out, "volumetric.pt"))
print("wrote 4 models to", out)
