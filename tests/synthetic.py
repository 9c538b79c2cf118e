"""Test data made on the spot: synthetic thumbnails with multilingual titles, and a tiny text model.

Nothing here downloads anything; every test and the app's tests build their own data from this.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Four "channels" with their own colours, shapes and title vocabulary in English, Sinhala and Tamil.
CHANNELS = {
    "Tech Reviews": {"colour": (30, 80, 200), "shape": "rectangle",
                     "titles": ["best budget phone review", "laptop unboxing and first look", "phone camera test",
                                "smartphone battery review", "tablet review in one minute", "new phone unboxing",
                                "headphones review and comparison", "gaming laptop benchmark"]},
    "Crafts": {"colour": (230, 120, 20), "shape": "ellipse",
               "titles": ["easy paper crafts for kids", "diy paper flowers", "craft ideas with paper",
                          "paper plane tutorial", "origami crafts at home", "diy crafts with bottles",
                          "simple paper art ideas", "craft hacks you need"]},
    "සිංහල ගීත": {"colour": (20, 160, 60), "shape": "triangle",
                  "titles": ["සිංහල ගීත එකතුව", "නව සිංහල ගීත", "ලස්සන සිංහල ගීතය", "සිංහල සංගීත ප්‍රසංගය",
                            "පැරණි සිංහල ගීත", "සිංහල ගීත 2024", "සිංහල ආදර ගීත", "සිංහල ගීත සජීවී"]},
    "தமிழ் சமையல்": {"colour": (200, 30, 120), "shape": "stripes",
                     "titles": ["தமிழ் சமையல் குறிப்பு", "சுவையான தமிழ் சமையல்", "தமிழ் சமையல் வீடியோ",
                               "எளிய தமிழ் சமையல்", "தமிழ் சமையல் ரகசியம்", "காலை உணவு தமிழ் சமையல்",
                               "தமிழ் சமையல் போட்டி", "தமிழ் சமையல் செய்முறை"]},
}


def thumbnail(colour: tuple[int, int, int], shape: str, seed: int, letterbox: bool = False,
              size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A 480x360 thumbnail: channel colour and shape with per-video variation; optional 16:9 letterbox bars."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(int(np.clip(c + rng.integers(-25, 25), 0, 255)) for c in colour))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = int(rng.integers(20, width - 160)), int(rng.integers(60, height - 140))
        w, h = int(rng.integers(60, 140)), int(rng.integers(40, 100))
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        if shape == "rectangle":
            draw.rectangle((x, y, x + w, y + h), fill=fill)
        elif shape == "ellipse":
            draw.ellipse((x, y, x + w, y + h), fill=fill)
        elif shape == "triangle":
            draw.polygon([(x, y + h), (x + w // 2, y), (x + w, y + h)], fill=fill)
        else:
            for offset in range(0, w, 20):
                draw.rectangle((x + offset, y, x + offset + 8, y + h), fill=fill)
    if letterbox:
        bar = (height - width * 9 // 16) // 2
        draw.rectangle((0, 0, width, bar), fill=(0, 0, 0))
        draw.rectangle((0, height - bar, width, height), fill=(0, 0, 0))
    return image


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def catalog_records() -> list[dict]:
    """32 videos: 8 per channel, every other one letterboxed like a real hqdefault thumbnail."""
    records = []
    for channel_index, (channel, style) in enumerate(CHANNELS.items()):
        for video_index, title in enumerate(style["titles"]):
            seed = channel_index * 100 + video_index
            image = thumbnail(style["colour"], style["shape"], seed, letterbox=video_index % 2 == 0)
            records.append({"video_id": f"vid{channel_index}{video_index:02d}", "title": title,
                            "image": {"bytes": jpeg_bytes(image), "path": None}, "channel": channel,
                            "views": 1000 * (video_index + 1)})
    return records


def new_records(count: int = 8, start: int = 0) -> list[dict]:
    """Videos the catalog does not have yet (ids ``new000``...), in the channels' styles: uploads for ``train add``."""
    styles = list(CHANNELS.items())
    records = []
    for number in range(start, start + count):
        channel, style = styles[number % len(styles)]
        image = thumbnail(style["colour"], style["shape"], 10_000 + number, letterbox=number % 2 == 1)
        records.append({"video_id": f"new{number:03d}", "title": f"{style['titles'][number % 8]} {number}",
                        "image": {"bytes": jpeg_bytes(image), "path": None}, "channel": channel,
                        "views": 10 * number})
    return records


def write_catalog_parquet(path: Path, records: list[dict] | None = None) -> Path:
    """Save records as a Hugging Face ``datasets`` parquet file with an Image column."""
    import datasets

    records = catalog_records() if records is None else records
    features = datasets.Features({"video_id": datasets.Value("string"), "title": datasets.Value("string"),
                                  "image": datasets.Image(), "channel": datasets.Value("string"),
                                  "views": datasets.Value("int64")})
    columns = {name: [record[name] for record in records] for name in features}
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


def write_tiny_text_model(folder: Path, titles: list[str] | None = None, dimension: int = 32) -> Path:
    """A randomly initialised 2-layer BERT with a WordPiece vocabulary learnt from the titles,
    saved as a sentence-transformers folder (mean pooling). Deterministic for a given input."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = Path(folder)
    titles = titles or [t for style in CHANNELS.values() for t in style["titles"]]
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(titles * 3, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special))
    from tokenizers.processors import TemplateProcessing

    tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")),
                                                 ("[SEP]", tokenizer.token_to_id("[SEP]"))])
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]", model_max_length=64).save_pretrained(raw)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=dimension, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * dimension, max_position_embeddings=64)
    BertModel(config).save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(dimension, pooling_mode="mean")], device="cpu")
    out = folder / "model"
    model.save(str(out))
    (out / "test_model.json").write_text(json.dumps({"dimension": dimension}))
    return out


def write_tiny_xlmr_model(folder: Path, tokenizer_dir: Path, dimension: int = 32) -> Path:
    """A randomly initialised 2-layer XLM-RoBERTa (the architecture of the default multilingual-e5
    models) with the tiny BERT's tokenizer, saved as a sentence-transformers folder (mean pooling)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    raw = Path(folder) / "raw"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.save_pretrained(raw)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=dimension, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=2 * dimension, max_position_embeddings=80,
                              pad_token_id=tokenizer.pad_token_id, type_vocab_size=1)
    XLMRobertaModel(config).save_pretrained(raw)
    model = SentenceTransformer(modules=[Transformer(str(raw), max_seq_length=64),
                                         Pooling(dimension, pooling_mode="mean")], device="cpu")
    out = Path(folder) / "model"
    model.save(str(out))
    return out
