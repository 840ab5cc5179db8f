"""Exports Meta's Segment Anything model for clisc's TorchScript adapter.

usage: python sam_torchscript.py --model-type vit_b --checkpoint sam_vit_b_01ec64.pth --out sam_vit_b.pt

The file it writes has the two methods of the adapter's
`prompt_encoding = "embed-decode"` contract (docs/plugins-torchscript.md):

    embed(image [1, 3, h, w], 0..255, longest side 1024) -> embedding
    decode(embedding, box [1, 4], points [1, N, 2], labels [1, N]) -> logits [1, 1, 1024, 1024]

so the image encoder runs once per slice and each prompt set of that slice
only runs the small decoder. `box` is all -1 when a prompt set has no box;
`labels` are int64, 1 = positive point, 0 = negative; N may be 0.

Meta's classes cannot be scripted as a whole (`torch.jit.script` fails on
the image encoder's `pad_hw`, on the prompt encoder's optional tuple and on
the decoder's indexed ModuleList), and a traced prompt encoder would fix the
number of points. The recipe therefore traces the image encoder (its input
is always 1024 x 1024) and the mask decoder (its shapes follow the number of
prompt tokens, so the trace holds for any N), and re-states the prompt
encoder's few lines in TorchScript with the checkpoint's own parameters.
`plugins/adapters/tests/torchscript_sam.rs` exports a random-weight SAM
with this file and checks the adapter's masks against `SamPredictor`.
"""

import argparse
import math
import warnings
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F


class _MaskDecoderSingleMask(nn.Module):
    """SAM's mask decoder with `multimask_output=False`, tensors only (traceable)."""

    def __init__(self, mask_decoder: nn.Module):
        super().__init__()
        self.mask_decoder = mask_decoder

    def forward(self, embedding, image_pe, sparse, dense):
        masks, _iou = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return masks


class SamEmbedDecode(nn.Module):
    """`embed` + `decode` around a `segment_anything.modeling.Sam`.

    The prompt embedding mirrors `PromptEncoder._embed_points`,
    `_embed_boxes` and `PositionEmbeddingRandom` (pixel centres at +0.5, a
    padding point with label -1 when there is no box), and `decode`
    upsamples the low-resolution logits to the 1024 x 1024 input frame as
    `Sam.postprocess_masks` does before its crop.
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        size = sam.image_encoder.img_size
        self.img_size = size
        example = torch.zeros(1, 3, size, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracing warnings on Python-float constants
            self.image_encoder = torch.jit.trace(sam.image_encoder.eval(), example)
            embedding = self.image_encoder(example)
            pe = sam.prompt_encoder
            image_pe = pe.get_dense_pe()
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                1, -1, pe.image_embedding_size[0], pe.image_embedding_size[1]
            )
            sparse = torch.zeros(1, 3, pe.embed_dim)
            self.mask_decoder = torch.jit.trace(
                _MaskDecoderSingleMask(sam.mask_decoder).eval(), (embedding, image_pe, sparse, dense)
            )
        self.register_buffer("pixel_mean", sam.pixel_mean.clone())
        self.register_buffer("pixel_std", sam.pixel_std.clone())
        self.register_buffer("image_pe", image_pe.detach().clone())
        self.register_buffer("dense", dense.detach().contiguous().clone())
        self.register_buffer("gaussian", pe.pe_layer.positional_encoding_gaussian_matrix.detach().clone())
        self.register_buffer(
            "point_weights", torch.cat([e.weight.detach() for e in pe.point_embeddings], 0).clone()
        )  # rows: negative point, positive point, box corner 1, box corner 2
        self.register_buffer("not_a_point", pe.not_a_point_embed.weight.detach().clone())

    @torch.jit.export
    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """`image` [1, 3, h, w] in 0..255 with max(h, w) = 1024 -> image embedding."""
        x = (image - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2], x.shape[-1]
        x = F.pad(x, (0, self.img_size - w, 0, self.img_size - h))
        return self.image_encoder(x)

    def _positional(self, coords: torch.Tensor) -> torch.Tensor:
        coords = coords.clone()
        coords[:, :, 0] = coords[:, :, 0] / self.img_size
        coords[:, :, 1] = coords[:, :, 1] / self.img_size
        coords = 2 * coords - 1
        coords = coords @ self.gaussian
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    @torch.jit.export
    def decode(
        self, embedding: torch.Tensor, box: torch.Tensor, points: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Mask logits [1, 1, 1024, 1024] for one prompt set (see the module doc)."""
        has_box = bool(box[0, 0] >= 0)
        tokens: List[torch.Tensor] = []
        if points.shape[1] > 0:
            coords = points.to(torch.float32) + 0.5
            labels = labels.to(torch.int64)
            if not has_box:
                coords = torch.cat([coords, torch.zeros(1, 1, 2, device=coords.device)], dim=1)
                labels = torch.cat([labels, -torch.ones(1, 1, dtype=torch.int64, device=labels.device)], dim=1)
            emb = self._positional(coords)
            lab = labels.unsqueeze(-1)
            emb = torch.where(lab == -1, torch.zeros_like(emb), emb)
            emb = torch.where(lab == -1, emb + self.not_a_point, emb)
            emb = torch.where(lab == 0, emb + self.point_weights[0], emb)
            emb = torch.where(lab == 1, emb + self.point_weights[1], emb)
            tokens.append(emb)
        if has_box:
            corners = self._positional((box.to(torch.float32) + 0.5).reshape(-1, 2, 2))
            corners[:, 0, :] += self.point_weights[2]
            corners[:, 1, :] += self.point_weights[3]
            tokens.append(corners)
        if len(tokens) > 0:
            sparse = torch.cat(tokens, dim=1)
        else:
            sparse = torch.zeros(1, 0, self.dense.shape[1], device=embedding.device)
        low_res = self.mask_decoder(embedding, self.image_pe, sparse, self.dense)
        return F.interpolate(low_res, (self.img_size, self.img_size), mode="bilinear", align_corners=False)

    def forward(
        self, image: torch.Tensor, box: torch.Tensor, points: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return self.decode(self.embed(image), box, points, labels)


def export(sam: nn.Module, path: str) -> None:
    """Scripts `SamEmbedDecode(sam)` (eval mode) and saves it to `path`."""
    torch.jit.script(SamEmbedDecode(sam.eval()).eval()).save(path)


def main() -> None:
    from segment_anything import sam_model_registry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-type", default="vit_b", choices=sorted(sam_model_registry))
    parser.add_argument("--checkpoint", required=True, help="the official .pth file")
    parser.add_argument("--out", required=True, help="the TorchScript file to write")
    args = parser.parse_args()
    sam = sam_model_registry[args.model_type](checkpoint=args.checkpoint)
    export(sam, args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
