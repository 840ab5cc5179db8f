"""Reference data for the BiomedCLIP parity test (tests/biomedclip_parity.rs).

Builds BiomedCLIP at full size with open_clip 3.3.0 (timm ViT-B/16 image
tower, `transformers` BERT text tower) and seeded random weights, entirely
from local files: nothing is fetched from the Hugging Face hub. OUT_DIR
becomes a folder like the published model's, read with open_clip's
`local-dir:` schema:

* `open_clip_config.json`: BiomedCLIP's published configuration, except
  that `hf_model_name` and `hf_tokenizer_name` name this folder instead of
  `microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract` on the hub;
* `config.json`: that BERT's configuration (PubMedBERT's published
  values), which `HFTextEncoder` reads with `AutoConfig.from_pretrained`;
* `vocab.txt` + `tokenizer_config.json`: a random but valid WordPiece
  vocabulary of PubMedBERT's size (30522 lines, the special tokens where
  BERT vocabularies have them), with which the paper's prompts split into
  whole words, `##` continuation pieces and an `[UNK]` (no piece contains
  the letter "v");
* `open_clip_pytorch_model.bin`: `torch.save(model.state_dict())` of the
  random model, as the published file is.

The model and tokenizer are then loaded back the way users load
BiomedCLIP (`open_clip.create_model_and_transforms` and
`open_clip.get_tokenizer` on the folder; the checkpoint is loaded strictly)
and run on three 8-bit grey slices (through open_clip's own PIL transform)
and the two prompts. Written next to the model:

* `reference.safetensors`: `raw_N` (the 8-bit slices, height x width),
  `pixels_N` (each through open_clip's transform), `tokens` (the prompts'
  rows), `image_features`, `text_features` (before normalisation),
  `logits` (`logit_scale.exp() * img @ txt.T` of the normalised features)
  and `probs` (softmax over the prompts);
* `tokenizer.json`: a corpus of texts with open_clip's rows for them;
* `info.json`: the parameter count of the model.

Usage: $CLISC_PYTHON make_biomedclip_reference.py OUT_DIR
"""
import json
import math
import os
import random
import sys

import numpy as np
import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import BertConfig

SEED = 2025
PROMPT_NORMAL = "an image of brain tissue showing typical signal intensity without any regions of abnormal intensity or suspicious mass"
PROMPT_ABNORMAL = "an image of brain tissue showing a tumor with uneven hyperintensity and irregular borders distinct from surroundings"

# open_clip_config.json of microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224.
OPEN_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {
            "timm_model_name": "vit_base_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
            "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
    },
}

# PubMedBERT (BiomedBERT base uncased abstract)'s config.json values.
BERT_CONFIG = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    type_vocab_size=2,
    initializer_range=0.02,
    layer_norm_eps=1e-12,
    pad_token_id=0,
    position_embedding_type="absolute",
)


def write_vocab(path):
    """30522 lines: BERT's special-token layout, then pieces for the
    prompts and the corpus, then random pieces without the letter "v"."""
    rng = random.Random(SEED)
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = "abcdefghijklmnopqrstuwxyz"  # no "v": "uneven" has no piece
    tokens += list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("0123456789") + list(letters)
    tokens += ["##" + c for c in letters + "0123456789"]
    tokens += "日 本 語 中 文 한 국 ε λ ж я ß ø".split()
    tokens += [
        "an", "image", "of", "brain", "tissue", "showing", "typical", "signal", "intensity", "without",
        "any", "regions", "or", "suspicious", "mass", "a", "tumor", "with", "and", "irregular", "borders",
        "distinct", "from", "ab", "##normal", "hyper", "##intens", "##ity", "surround", "##ings", "mri",
        "flair", "##air", "axial", "slice", "cafe", "naive", "resume", "##ume", "t2", "##mm", "the",
    ]
    seen = set(tokens)
    while len(tokens) < BERT_CONFIG["vocab_size"]:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(2, 7)))
        if rng.random() < 0.5:
            word = "##" + word
        if word not in seen:
            seen.add(word)
            tokens.append(word)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    return tokens


def brain_slice(h, w, seed):
    """An 8-bit grey slice: a bright ellipse with a brighter blob and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    cy, cx = h / 2, w / 2
    inside = ((y - cy) / (0.42 * h)) ** 2 + ((x - cx) / (0.38 * w)) ** 2 < 1
    blob = 90 * np.exp(-(((x - 0.6 * w) / (0.08 * w)) ** 2 + ((y - 0.4 * h) / (0.1 * h)) ** 2))
    img = inside * (70 + blob) + rng.normal(0, 10, size=(h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def tokenizer_corpus(tokenizer):
    texts = [
        PROMPT_NORMAL,
        PROMPT_ABNORMAL,
        "An MRI slice: FLAIR, axial (4mm), T2-weighted!",
        "Café naïve résumé Ångström ÉCOLE ß",
        "日本語のテキスト 中文文本 한국어 ελληνικά жизнь",
        "“Curly quotes” and ‘single’ — dashes – … ellipsis",
        "&amp; &lt;tag&gt; &eacute;t&eacute; &#233; html",
        "tabs\tand\nnewlines\r\n  multiple   spaces  ",
        "[MASK] the [CLS]brain[SEP] [mask] [UNK]tumor [PAD]",
        "zero\u200bwidth control\x07 chars\u00ad soft hyphen",
        "numbers 0 1 23 456 3.14159 -42 1e10 50% $9.99 #1",
        "a" * 100 + " " + "b" * 101 + " " + "ab" * 60,
        "𫠠 𫤠 \U0002B820x",
        "",
        "   ",
        " ".join(["the brain tumor shows irregular borders and uneven hyperintensity"] * 30),
    ]
    rows = tokenizer(texts)
    return [{"text": t, "row": r.tolist()} for t, r in zip(texts, rows)]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    config = json.loads(json.dumps(OPEN_CLIP_CONFIG))
    config["model_cfg"]["text_cfg"]["hf_model_name"] = os.path.abspath(out)
    config["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = os.path.abspath(out)
    with open(os.path.join(out, "open_clip_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    BertConfig(**BERT_CONFIG).save_pretrained(out)
    vocab = write_vocab(os.path.join(out, "vocab.txt"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}, f)

    # No checkpoint in the folder yet: open_clip builds the towers with their
    # own random initialisation (pretrained_text=False: no BERT weights).
    model = open_clip.create_model("local-dir:" + out, pretrained_text=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(math.log(100.0))  # BiomedCLIP's trained scale sits at open_clip's clamp
            elif p.dim() == 1:
                # LayerNorm weights around 1, biases around 0 (instead of exactly 1 and 0).
                centre = 1.0 if "norm" in name.lower() and name.endswith(".weight") else 0.0
                p.copy_(torch.randn_like(p) * 0.1 + centre)
    torch.save(model.state_dict(), os.path.join(out, "open_clip_pytorch_model.bin"))

    # Load it back as users load BiomedCLIP.
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + out)
    model.eval()
    tokenizer = open_clip.get_tokenizer("local-dir:" + out)
    tokens = tokenizer([PROMPT_NORMAL, PROMPT_ABNORMAL])
    pieces = [vocab[i] for i in tokens.flatten().tolist()]
    assert "[UNK]" in pieces and any(p.startswith("##") for p in pieces), pieces

    raws = [brain_slice(240, 240, SEED), brain_slice(155, 240, SEED + 1), brain_slice(229, 187, SEED + 2)]
    pixels = [preprocess(Image.fromarray(r)) for r in raws]
    images = torch.stack(pixels)
    with torch.no_grad():
        image_features = model.encode_image(images)
        text_features = model.encode_text(tokens)
        img, txt, scale = model(images, tokens)
        logits = scale * img @ txt.T
        probs = logits.softmax(dim=-1)
    tensors = {
        "tokens": tokens.contiguous(),
        "image_features": image_features.contiguous(),
        "text_features": text_features.contiguous(),
        "logits": logits.contiguous(),
        "probs": probs.contiguous(),
    }
    for i, (r, p) in enumerate(zip(raws, pixels)):
        tensors[f"raw_{i}"] = torch.from_numpy(r).contiguous()
        tensors[f"pixels_{i}"] = p.contiguous()
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_corpus(tokenizer), f, ensure_ascii=False)
    with open(os.path.join(out, "info.json"), "w") as f:
        json.dump({"parameters": sum(p.numel() for p in model.parameters())}, f)
    with open(os.path.join(out, "DONE"), "w") as f:
        f.write("ok\n")
    print("reference written to", out, "probs", probs.tolist())


if __name__ == "__main__":
    main()
