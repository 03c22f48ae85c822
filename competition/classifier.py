"""model.family=classifier: an answer-vocabulary classifier, the approach that won Dacon 236118 (BEiT-3 over the
most frequent training answers). A vision backbone and a question encoder from transformers, the question
attending over the image features, a head over the fold's most common training answers.

    python -m competition train -c configs/demo_classifier.yaml --fold 0
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer, CLIPImageProcessor
from transformers.modeling_outputs import SequenceClassifierOutput

from competition.config import ClassifierConfig, DecodingConfig
from competition.data import ANSWER, IMAGE, QUESTION
from competition.dataset import IGNORE, Examples, pad
from competition.engine import Answer, batches
from competition.errors import ConfigError
from competition.images import Images
from competition.io import atomic_dir
from competition.modeling import CLIP_MEAN, CLIP_STD, train_word_tokenizer

CONFIG_FILE, WEIGHTS_FILE = "classifier.json", "model.safetensors"
MAX_IMAGE_TOKENS = 1024  # learned positions of the image features: a 32 x 32 feature map at most


class ClassifierProcessor:
    """The question tokenizer and the image processor of a classifier, saved and loaded together."""

    def __init__(self, tokenizer: Any, image_processor: Any) -> None:
        self.tokenizer, self.image_processor = tokenizer, image_processor

    def save_pretrained(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder: Path) -> ClassifierProcessor:
        return cls(AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder))


def feature_size(config: Any) -> int:
    """Channels of a backbone's last feature map: hidden_sizes[-1] (ResNet, ConvNeXt) or hidden_size (ViT)."""
    sizes = getattr(config, "hidden_sizes", None)
    return sizes[-1] if sizes else config.hidden_size


class AnswerClassifier(nn.Module):
    """Each image feature (+ its learned position) fused with the question, pooled by mean (counts) and max (the
    one object asked about); logits over `answers`."""

    def __init__(self, vision: nn.Module, text: nn.Module, answers: list[str], c: ClassifierConfig) -> None:
        super().__init__()
        self.answers, self.settings = answers, c
        self.vision_tower, self.text_encoder = vision, text
        h = c.hidden
        self.image_proj = nn.Linear(feature_size(vision.config), h)
        self.text_proj = nn.Linear(text.config.hidden_size, h)
        self.positions = nn.Parameter(torch.zeros(1, MAX_IMAGE_TOKENS, h))
        self.fusion = nn.Sequential(nn.Linear(3 * h, h), nn.GELU(), nn.Linear(h, h), nn.GELU())
        self.head = nn.Sequential(nn.Linear(3 * h, 2 * h), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(2 * h, len(answers)))

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:  # fmt: skip
        img = self.vision_tower(pixel_values=pixel_values).last_hidden_state
        if img.dim() == 4:  # (B, C, H, W) of a convolutional backbone -> (B, H*W, C)
            img = img.flatten(2).transpose(1, 2)
        img = self.image_proj(img) + self.positions[:, : img.shape[1]]
        words = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(words.dtype)
        q = self.text_proj((words * mask).sum(1) / mask.sum(1).clamp_min(1))
        asked = q.unsqueeze(1).expand_as(img)
        cells = self.fusion(torch.cat([img, asked, img * asked], -1))
        logits = self.head(torch.cat([q, cells.mean(1), cells.amax(1)], -1))
        loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def from_config(key: str, fields: dict[str, Any]) -> nn.Module:
    """A random-init transformers model of the config `fields` (model_type + its fields); a ConfigError naming
    `key` when transformers cannot build it."""
    try:
        return AutoModel.from_config(AutoConfig.for_model(**fields))
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ConfigError(f"{key}: transformers cannot build a model of {fields} ({type(e).__name__}: {e})") from None


def backbones(c: ClassifierConfig, texts: list[str]) -> tuple[nn.Module, nn.Module, ClassifierProcessor]:
    """The vision backbone, the question encoder and their processor: pretrained by name, else random-init from
    the configured configs with a word tokenizer trained on the data's text."""
    if c.vision:
        vision = AutoModel.from_pretrained(c.vision)
        vision, image_processor = getattr(vision, "vision_model", vision), AutoImageProcessor.from_pretrained(c.vision)
    else:
        vision = from_config("model.classifier.vision_config", c.vision_config)
        image_processor = CLIPImageProcessor(size={"shortest_edge": c.image_size}, image_mean=CLIP_MEAN, image_std=CLIP_STD,
                                             crop_size={"height": c.image_size, "width": c.image_size})  # fmt: skip
    if c.text:
        return vision, AutoModel.from_pretrained(c.text), ClassifierProcessor(AutoTokenizer.from_pretrained(c.text), image_processor)
    tok = train_word_tokenizer(texts)
    tok.padding_side = "right"
    text = from_config("model.classifier.text_config", {**c.text_config, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id})
    return vision, text, ClassifierProcessor(tok, image_processor)


def build_classifier(c: ClassifierConfig, texts: list[str], answers: list[str], seed: int) -> tuple[AnswerClassifier, ClassifierProcessor]:
    """A classifier over `answers` (the fold's most common training answers, at most c.max_answers)."""
    torch.manual_seed(seed)
    vision, text, processor = backbones(c, texts)
    return AnswerClassifier(vision, text, answers[: c.max_answers], c), processor


class ClassifierSet(Examples):
    """One example per question: its image, its tokenized question and its answer's index (IGNORE when the answer
    is not among the classifier's)."""

    def __init__(self, processor: ClassifierProcessor, rows: Any, answers: list[str], max_length: int) -> None:
        index = {a: i for i, a in enumerate(answers)}
        ids = processor.tokenizer(rows[QUESTION].tolist(), truncation=True, max_length=max_length)["input_ids"]
        self.items = [{"image_id": im, "input_ids": q, "label": index.get(a, IGNORE)}
                      for im, q, a in zip(rows[IMAGE], ids, rows[ANSWER], strict=True)]  # fmt: skip


class ClassifierCollator:
    """Pixels, right-padded questions and answer indices of a batch."""

    def __init__(self, images: Images, pad_id: int) -> None:
        self.images, self.pad_id = images, pad_id

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids, mask = pad([b["input_ids"] for b in batch], self.pad_id)
        return {"pixel_values": self.images([b["image_id"] for b in batch]), "input_ids": input_ids,
                "attention_mask": mask, "labels": torch.tensor([b["label"] for b in batch])}  # fmt: skip


def save_classifier(model: AnswerClassifier, processor: ClassifierProcessor, out: Path) -> None:
    """Write weights, processor and the config that rebuilds the model to `out` (via a sibling temp folder)."""
    meta = {"answers": model.answers, "settings": model.settings.model_dump(mode="json"),
            "vision_config": model.vision_tower.config.to_dict(), "text_config": model.text_encoder.config.to_dict()}  # fmt: skip
    with atomic_dir(out) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        processor.save_pretrained(tmp)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n")


def load_classifier(folder: Path) -> tuple[AnswerClassifier, ClassifierProcessor]:
    """What save_classifier wrote, in eval mode; the backbones come from the saved configs, their weights from the file."""
    meta = json.loads((folder / CONFIG_FILE).read_text())
    vision = AutoModel.from_config(AutoConfig.for_model(**meta["vision_config"]))
    text = AutoModel.from_config(AutoConfig.for_model(**meta["text_config"]))
    model = AnswerClassifier(vision, text, meta["answers"], ClassifierConfig(**meta["settings"]))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval(), ClassifierProcessor.from_pretrained(folder)


class ClassifierEngine:
    """The engine's surface for a classifier: the most likely answer and its log-probability for each row.

    The prompt is not used (the classifier reads the bare question) and every decoding is the argmax."""

    cut_answers = 0  # a classifier never cuts an answer

    def __init__(self, model: AnswerClassifier, processor: ClassifierProcessor, images: Images, *,
                 batch_size: int = 32, max_length: int = 128) -> None:  # fmt: skip
        self.model, self.tok, self.images = model, processor.tokenizer, images
        self.batch_size, self.max_length = batch_size, max_length

    def max_new_tokens(self, d: DecodingConfig) -> int:
        return 0

    @torch.inference_mode()
    def _batch(self, questions: list[str], image_ids: list[str], rows: list[int]) -> list[Answer]:
        ids = self.tok([questions[r] for r in rows], truncation=True, max_length=self.max_length)["input_ids"]
        input_ids, mask = pad(ids, self.tok.pad_token_id)
        dev = next(self.model.parameters()).device
        pixels = self.images([image_ids[r] for r in rows]).to(dev)
        logits = self.model(pixel_values=pixels, input_ids=input_ids.to(dev), attention_mask=mask.to(dev)).logits
        best = logits.float().log_softmax(-1).max(-1)
        return [Answer(r, self.model.answers[i], float(lp))
                for r, i, lp in zip(rows, best.indices.tolist(), best.values.tolist(), strict=True)]  # fmt: skip

    def answer(self, prompt: str, decoding: DecodingConfig, questions: list[str], image_ids: list[str],
               rows: list[int] | None = None, progress: Callable[[int], None] | None = None) -> Iterator[list[Answer]]:  # fmt: skip
        """An Answer for each row, yielded one batch (grouped by image) at a time."""
        rows = list(range(len(questions))) if rows is None else rows
        for batch in batches([image_ids[i] for i in rows], self.batch_size):
            yield self._batch(questions, image_ids, [rows[i] for i in batch])
            if progress:
                progress(len(batch))
