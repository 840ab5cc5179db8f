"""Reference data for the CLIP parity tests (tests/clip_parity.rs).

Builds OpenAI's CLIP (the `clip` package from `clip-anytorch`) at full
ViT-B/32 size with seeded random weights and writes, into OUT_DIR:

* `vit-b32-random.jit.pt`: a TorchScript archive like OpenAI's `ViT-B-32.pt`
  (weights converted to fp16 with `clip.model.convert_weights`, module traced
  with `encode_image`, `encode_text` and `forward`);
* `vit-b32-random.state_dict.pt`: `torch.save` of the fp32 state dict (same
  values: the fp16-rounded weights widened back, as `clip.load` does on CPU);
* `vit-b32-random.safetensors`: the same state dict as safetensors (written
  here by hand, the format is a JSON header plus raw little-endian data);
* `reference.safetensors`: inputs and outputs: `images` (random already
  preprocessed images), `raw_image` (an 8-bit grey image) and
  `raw_preprocessed` (it through CLIP's own PIL/torchvision transform),
  `tokens`, `image_features`, `raw_image_features`, `text_features`,
  `logits_per_image`;
* `tokenizer.json`: a corpus of texts with `SimpleTokenizer.encode` ids and
  `clip.tokenize(truncate=True)` rows.

Usage: $CLISC_PYTHON make_clip_reference.py OUT_DIR
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import clip
from clip.model import CLIP, convert_weights
from PIL import Image

SEED = 1234
TEXTS = [
    "an image of brain tissue showing typical signal intensity without any regions of abnormal intensity or suspicious mass",
    "an image of brain tissue showing a tumor with uneven hyperintensity and irregular borders distinct from surroundings",
    "a diagram",
    "A photo of a CAT, sitting on 3 mats!",
]


def write_safetensors(path, tensors):
    header = {}
    blobs = []
    offset = 0
    dtypes = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.uint8: "U8"}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def raw_image():
    """A 229 x 187 (width x height) grey image with smooth structure and noise."""
    rng = np.random.default_rng(SEED)
    h, w = 187, 229
    y, x = np.mgrid[0:h, 0:w]
    blob = 120 * np.exp(-(((x - 140) / 30.0) ** 2 + ((y - 80) / 22.0) ** 2))
    ring = 60 * (np.abs(np.hypot(x - 110, y - 95) - 70) < 6)
    img = 40 + blob + ring + rng.normal(0, 12, size=(h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def tokenizer_corpus():
    base = TEXTS + [
        "Hello, world! It's 2024; we're testing: (parentheses), [brackets] & {braces}...",
        "numbers 0 1 23 456 7890 3.14159 -42 1e10 1,000,000 #1 50% $9.99",
        "Café naïve résumé Ångström Straße façade crème brûlée ÉCOLE",
        "日本語のテキスト 中文文本 한국어 텍스트",
        "emoji 😀🎉👍🏽 🧠 and ❤️ hearts",
        "“Curly quotes” and ‘single’ — dashes – and … ellipsis",
        "ﬁne ﬂow ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ ligatures",
        "&amp; &lt;tag&gt; &eacute;t&eacute; &#233; &#x41; &notanentity; &amp",
        "<b>bold &amp; html</b> stays",
        "tabs\tand\nnewlines\r\n  multiple   spaces   ",
        "I'm, you're, they've, she'll, he'd, it's, DON'T, WE'LL",
        "MiXeD CaSe TeXt WiTh ÜMLAUTS",
        "Ελληνικά κείμενο ΣΊΣΥΦΟΣ русский текст العربية עברית हिन्दी",
        "a" * 10 + " " + "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "underscores_and-hyphens/slashes\\backslashes|pipes~tildes`backticks^carets",
        "<|startoftext|> special <|endoftext|> tokens",
        "",
        "   ",
        "MRI T2-FLAIR hyperintensity, 1.5T scanner, 4mm slices (axial)",
    ]
    long_texts = [
        " ".join(["the brain tumor shows irregular borders and uneven hyperintensity"] * 12),
        "word " * 200,
        ", ".join(str(i) for i in range(120)),
    ]
    texts = base + long_texts
    out = []
    tok = clip.simple_tokenizer.SimpleTokenizer()
    for t in texts:
        out.append(
            {
                "text": t,
                "ids": tok.encode(t),
                "row": clip.tokenize([t], truncate=True)[0].tolist(),
            }
        )
    return out


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    # Full ViT-B/32 (clip.load's configuration of ViT-B-32.pt).
    model = CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).eval()
    # Random values everywhere (the built-in init leaves LayerNorms at 1/0 and biases at 0).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            if p.dim() == 1:
                # LayerNorm weights around 1, biases and the class embedding around 0.
                centre = 1.0 if name.endswith(".weight") else 0.0
                p.copy_(torch.randn_like(p) * 0.1 + centre)
    convert_weights(model)  # fp16 like the official release

    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(SEED + 1))
    tokens = clip.tokenize(TEXTS)
    with torch.no_grad():
        traced = torch.jit.trace_module(
            model,
            {"encode_image": images[:1].half(), "encode_text": tokens[:1], "forward": (images[:1].half(), tokens[:1])},
            check_trace=False,
        )
    traced.save(os.path.join(out, "vit-b32-random.jit.pt"))

    # The fp32 reference: clip.load's path on CPU (state dict of the archive, model.float()).
    state = {k: v.float() for k, v in model.state_dict().items()}
    ref = CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).eval()
    ref.load_state_dict(state)
    ref = ref.float()
    torch.save(ref.state_dict(), os.path.join(out, "vit-b32-random.state_dict.pt"))
    write_safetensors(os.path.join(out, "vit-b32-random.safetensors"), dict(ref.state_dict()))

    preprocess = clip.clip._transform(224)
    raw = raw_image()
    raw_pre = preprocess(Image.fromarray(raw))
    with torch.no_grad():
        image_features = ref.encode_image(images)
        raw_features = ref.encode_image(raw_pre.unsqueeze(0))
        text_features = ref.encode_text(tokens)
        logits_per_image, _ = ref(images, tokens)
    write_safetensors(
        os.path.join(out, "reference.safetensors"),
        {
            "images": images,
            "raw_image": torch.from_numpy(raw),
            "raw_preprocessed": raw_pre,
            "tokens": tokens,
            "image_features": image_features,
            "raw_image_features": raw_features,
            "text_features": text_features,
            "logits_per_image": logits_per_image,
        },
    )
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_corpus(), f, ensure_ascii=False)
    with open(os.path.join(out, "DONE"), "w") as f:
        f.write("ok\n")
    print("reference written to", out)


if __name__ == "__main__":
    main()
