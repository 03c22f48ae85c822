"""model.family=classifier: an answer-vocabulary classifier, the approach that won Dacon 236118 (BEiT-3 over the
most frequent training answers). A vision backbone and a question encoder from transformers; the image features
and the question's words as tokens of one fusion transformer (single-stream, as Pixel-BERT and ViLT; pre-norm,
which learns from scratch where BERT's post-norm layers did not); a head on its first token over the fold's most
common training answers.

    python -m competition train -c configs/demo_classifier.yaml --fold 0
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.utils.class_weight import compute_sample_weight
from torch import nn
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoTokenizer,
    CLIPImageProcessor,
    PretrainedConfig,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from competition.backbones import ConvStemConfig  # noqa: F401  (registers conv_stem with the Auto classes)
from competition.config import DecodingConfig
from competition.data import ANSWER, ANSWERS, IMAGE, QUESTION
from competition.dataset import IGNORE, Examples, image_groups, pad
from competition.engine import Answer, batches, ranked_answers
from competition.errors import ConfigError
from competition.images import CLIP_MEAN, CLIP_STD, Images
from competition.io import atomic_dir
from competition.metrics import VQA_AGREEING, types_of
from competition.model_config import ClassifierConfig
from competition.tokenizer import train_word_tokenizer

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
    """A pre-norm fusion transformer over [first token; image features; question words], the image's tokens with
    learned positions, the words with the encoder's and a text-type vector; logits over `answers` from the first
    token. Each image is encoded once for all its questions (`image_index`)."""

    def __init__(self, vision: nn.Module, text: nn.Module, answers: list[str], c: ClassifierConfig) -> None:
        super().__init__()
        self.answers, self.settings = answers, c
        self.vision_tower, self.text_encoder = vision, text
        h = c.hidden
        self.image_proj = nn.Linear(feature_size(vision.config), h)
        self.text_proj = nn.Linear(text.config.hidden_size, h)
        if c.fusion_layers:
            self.positions = nn.Parameter(torch.randn(1, 1 + MAX_IMAGE_TOKENS, h) * c.position_std)  # the first token's, the image's
            self.text_type = nn.Parameter(torch.zeros(1, 1, h))
            layer = nn.TransformerEncoderLayer(h, c.fusion_heads, 2 * h, dropout=0.0, batch_first=True, norm_first=True)
            self.fusion: nn.Module = nn.TransformerEncoder(layer, c.fusion_layers, enable_nested_tensor=False)
        else:  # a notebook's model: the image's mean cell (or glimpses) beside the question's mean word, one hidden layer
            if c.glimpses:  # each glimpse weighs the cells by how well they fit the question
                self.attend = nn.Sequential(nn.Linear(3 * h, h), nn.ReLU(), nn.Linear(h, c.glimpses))
            image_parts = 2 * c.glimpses if c.glimpses else 1  # each glimpse comes with its product with the question
            fits = c.glimpses if c.glimpse_fit else 0  # one number a glimpse: its best cell's score
            self.fusion = nn.Sequential(nn.Linear((1 + image_parts) * h + fits, h), nn.ReLU())
        self.head = nn.Sequential(nn.LayerNorm(h), nn.Dropout(c.dropout), nn.Linear(h, len(answers)))

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(images, features, hidden): a convolutional map's cells or a transformer's tokens (after their maximum
        when pooled_token), projected."""
        img = self.vision_tower(pixel_values=pixel_values).last_hidden_state
        if img.dim() == 4:  # (B, C, H, W) of a convolutional backbone -> (B, H*W, C)
            img = img.flatten(2).transpose(1, 2)
        if self.settings.pooled_token:
            img = torch.cat([img.amax(1, keepdim=True), img], 1)
        return self.image_proj(img)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                image_index: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                answer_weights: torch.Tensor | None = None) -> SequenceClassifierOutput:  # fmt: skip
        img = self.image_tokens(pixel_values)
        img = img if image_index is None else img[image_index]
        words = self.text_proj(self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
        logits = self.head(self.fused(img, words, attention_mask))
        loss = None if labels is None else answer_loss(logits.float(), labels, self.settings.loss, answer_weights)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def fused(self, img: torch.Tensor, words: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(questions, hidden) read by the head: the fusion transformer's first token, or (fusion_layers=0) the
        hidden layer over the mean image token and the mean of the question's words."""
        mask = attention_mask.unsqueeze(-1).to(words.dtype)
        mean_word = (words * mask).sum(1) / mask.sum(1).clamp_min(1)
        if not self.settings.fusion_layers:
            seen = self.glimpsed(img, mean_word) if self.settings.glimpses else img.mean(1)
            return self.fusion(torch.cat([seen, mean_word], 1))
        first = (img.mean(1) + mean_word)[:, None] if self.settings.summary_token else torch.zeros_like(img[:, :1])
        seen = torch.cat([first, img], 1) + self.positions[:, : 1 + img.shape[1]]
        tokens = torch.cat([seen, words + self.text_type], 1)
        ignore = torch.cat([attention_mask.new_ones(len(words), seen.shape[1]), attention_mask], 1) == 0
        return self.fusion(tokens, src_key_padding_mask=ignore)[:, 0]

    def glimpsed(self, img: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """(questions, 2 * glimpses * hidden, + glimpses with glimpse_fit): the image's cells averaged with weights
        the question gives them (from each cell, the question and their product), once per glimpse, each beside its
        product with the question; with glimpse_fit, then each glimpse's best score over the cells."""
        asked = question[:, None].expand(-1, img.shape[1], -1)
        scores = self.attend(torch.cat([img, asked, img * asked], -1))  # (questions, cells, glimpses)
        seen = torch.einsum("bng,bnh->bgh", scores.softmax(1), img)
        seen = torch.cat([seen, seen * question[:, None]], 1).flatten(1)
        return torch.cat([seen, scores.amax(1)], 1) if self.settings.glimpse_fit else seen

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Each answer's log-probability: over all answers (ce), or of each answer on its own (bce)."""
        return F.logsigmoid(logits.float()) if self.settings.loss == "bce" else logits.float().log_softmax(-1)


def answer_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the answers, or VQA's per-answer sigmoid (bce): a question whose answer is outside the
    head's list has an all-zero target there, and is skipped by ce. Labels are answer indices, or (several
    annotators' answers) a soft score per answer: ce learns their normalized share, bce the scores themselves.
    `weights`: one per question (answer_weights), a weighted mean instead of the plain one."""
    if labels.dim() == 2:
        return soft_answer_loss(logits, labels, kind, weights)
    if kind == "ce":
        known = labels != IGNORE
        per_question = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
        return weighted_mean(per_question, known, weights)
    known = (labels != IGNORE).unsqueeze(1)
    target = F.one_hot(labels.clamp_min(0), logits.shape[1]).to(logits.dtype) * known
    per_question = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)
    return weighted_mean(per_question, torch.ones_like(per_question, dtype=torch.bool), weights)


def weighted_mean(per_question: torch.Tensor, counted: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean of the counted questions' losses, each by its weight when given (0 when none is counted)."""
    w = counted.to(per_question.dtype) * (1.0 if weights is None else weights.to(per_question.dtype))
    return (per_question * w).sum() / w.sum().clamp_min(torch.finfo(per_question.dtype).tiny)


def balanced_weights(rows: pd.DataFrame) -> list[float]:
    """Each question's weight: its answer's 'balanced' class weight (sklearn) among its question type's questions,
    n / (answers x count), so every answer of a type weighs the same in all and the weights' mean is 1."""
    weights, answers = np.ones(len(rows)), rows[ANSWER].to_numpy()
    for idx in pd.Series(range(len(rows))).groupby(types_of(rows).to_numpy()).indices.values():
        weights[idx] = compute_sample_weight("balanced", answers[idx])
    return weights.tolist()


def soft_answer_loss(logits: torch.Tensor, scores: torch.Tensor, kind: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    """answer_loss with a (questions, answers) target of soft scores (soft_scores)."""
    if kind == "bce":
        per_question = F.binary_cross_entropy_with_logits(logits, scores, reduction="none").sum(1)
        return weighted_mean(per_question, torch.ones_like(per_question, dtype=torch.bool), weights)
    total = scores.sum(1)
    known = total > 0
    if not known.any():
        return logits.sum() * 0.0
    per_question = F.cross_entropy(logits, scores / total.clamp_min(1e-9)[:, None], reduction="none")
    return weighted_mean(per_question, known, weights)


def soft_scores(answers: tuple[str, ...], index: dict[str, int]) -> list[tuple[int, float]]:
    """VQA's training target of one question: each distinct answer in the head with min(1, annotators / 3)."""
    return [(index[a], min(1.0, answers.count(a) / VQA_AGREEING)) for a in dict.fromkeys(answers) if a in index]


SIZE_WORDS = ("size", "layers", "heads", "dim", "depth", "channels", "stride")  # config fields that cannot be negative


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, cut to `limit` characters."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def backbone_config(key: str, fields: dict[str, Any]) -> PretrainedConfig:
    """The transformers config of `fields` (model_type + its fields); a one-line ConfigError naming `key` for an
    unknown model_type (with the closest known ones), a negative size, or fields transformers refuses."""
    kind = fields.get("model_type")
    if kind not in CONFIG_MAPPING:
        close = difflib.get_close_matches(str(kind), list(CONFIG_MAPPING.keys()), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "e.g. conv_stem, vit, convnext, bert"
        raise ConfigError(f"{key}.model_type={kind!r} is not a transformers model type: {hint}")
    for name, value in fields.items():
        values = value if isinstance(value, list) else [value]
        if any(w in name for w in SIZE_WORDS) and any(isinstance(v, int | float) and v < 0 for v in values):
            raise ConfigError(f"{key}.{name}={value}: a size cannot be negative")
    try:
        return AutoConfig.for_model(**fields)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ConfigError(f"{key}: transformers cannot build a model of {fields} ({type(e).__name__}: {first_line(e)})") from None


def build_backbone(key: str, config: PretrainedConfig) -> nn.Module:
    """A random-init model of `config` (on the current device); a one-line ConfigError naming `key` if it fails."""
    try:
        return AutoModel.from_config(config)
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
        raise ConfigError(f"{key}: transformers cannot build a model of {config.model_type} "
                          f"({type(e).__name__}: {first_line(e)})") from None  # fmt: skip


def from_config(key: str, fields: dict[str, Any]) -> nn.Module:
    """A random-init transformers model of the config `fields` (model_type + its fields); a ConfigError naming
    `key` when transformers cannot build it."""
    return build_backbone(key, backbone_config(key, fields))


def check_backbones(model: AnswerClassifier, keys: tuple[str, str], size: tuple[int, int]) -> int:
    """Refuse, naming the config key, backbones that build but cannot work: a vision model that does not read
    pixels, a question encoder that does not read tokens, a tower that cannot read `size` (width, height) images
    or yields no image tokens or more than MAX_IMAGE_TOKENS. Cheap on the meta device; the image token count."""
    for part, key, wanted in ((model.vision_tower, keys[0], "pixel_values"), (model.text_encoder, keys[1], "input_ids")):
        if part.main_input_name != wanted:
            kind = "vision" if wanted == "pixel_values" else "text"
            raise ConfigError(f"{key}: {part.config.model_type} is not a {kind} model (it reads {part.main_input_name}, "
                              f"not {wanted})")  # fmt: skip
    device = next(model.parameters()).device
    try:
        n = model.image_tokens(torch.zeros(1, 3, size[1], size[0], device=device)).shape[1]
    except (ValueError, RuntimeError, TypeError, IndexError) as e:
        raise ConfigError(f"{keys[0]}: cannot read {size[0]} x {size[1]} images ({first_line(e)})") from None
    if not 0 < n <= MAX_IMAGE_TOKENS:
        raise ConfigError(f"{keys[0]}: {n:,} image tokens from {size[0]} x {size[1]} images; the fusion has positions "
                          f"for 1 to {MAX_IMAGE_TOKENS:,} (classifier.MAX_IMAGE_TOKENS): change the patch, strides or image size")  # fmt: skip
    return n


def refuse_lora(mode: str) -> None:
    """The classifier trains its backbones whole (full) or not at all (projector): no LoRA."""
    if mode == "lora":
        raise ConfigError("train.mode=lora: model.family=classifier has no LoRA; use full (everything trains) or "
                          "projector (the backbones stay frozen)")  # fmt: skip


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
    """Up to `pack` questions of one image per example: their tokenized questions and answer indices (IGNORE when
    the answer is not among the classifier's); the image is encoded once for all of them."""

    def __init__(self, processor: ClassifierProcessor, rows: Any, answers: list[str], max_length: int, pack: int = 1,
                 weights: list[float] | None = None) -> None:  # fmt: skip
        index = {a: i for i, a in enumerate(answers)}
        ids = processor.tokenizer(rows[QUESTION].tolist(), truncation=True, max_length=max_length)["input_ids"]
        if ANSWERS in rows:  # several annotators: soft scores (answer index, score) instead of one index
            labels = [soft_scores(tuple(a), index) for a in rows[ANSWERS]]
        else:
            labels = [index.get(a, IGNORE) for a in rows[ANSWER]]
        self.items = [{"image_id": image, "input_ids": [ids[i] for i in idx], "labels": [labels[i] for i in idx],
                       **({} if weights is None else {"answer_weights": [weights[i] for i in idx]})}
                      for image, idx in image_groups(rows[IMAGE].tolist(), pack)]  # fmt: skip


def question_batch(tok: Any, images: Images, image_ids: list[str], questions: list[list[int]]) -> dict[str, torch.Tensor]:
    """Model inputs of questions about images: each distinct image once (pixel_values) and, per question, the row
    of its image (image_index) and its right-padded tokens."""
    distinct = list(dict.fromkeys(image_ids))
    where = {im: k for k, im in enumerate(distinct)}
    input_ids, mask = pad(questions, tok.pad_token_id)
    return {"pixel_values": images(distinct), "image_index": torch.tensor([where[im] for im in image_ids]),
            "input_ids": input_ids, "attention_mask": mask}  # fmt: skip


class ClassifierCollator:
    """A batch of examples as one question_batch with the answers' indices (or soft scores) as labels."""

    def __init__(self, images: Images, tokenizer: Any, n_answers: int) -> None:
        self.images, self.tok, self.n_answers = images, tokenizer, n_answers

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        image_ids = [b["image_id"] for b in batch for _ in b["input_ids"]]
        inputs = question_batch(self.tok, self.images, image_ids, [q for b in batch for q in b["input_ids"]])
        labels = [y for b in batch for y in b["labels"]]
        weights = {"answer_weights": torch.tensor([w for b in batch for w in b["answer_weights"]])} if (
            batch and "answer_weights" in batch[0]) else {}  # fmt: skip
        return {**inputs, **weights, "labels": soft_targets(labels, self.n_answers) if labels and isinstance(labels[0], list)
                else torch.tensor(labels)}  # fmt: skip


def soft_targets(labels: list[list[tuple[int, float]]], n_answers: int) -> torch.Tensor:
    """(questions, answers) soft scores from each question's (answer index, score) pairs."""
    target = torch.zeros(len(labels), n_answers)
    for row, pairs in enumerate(labels):
        for i, score in pairs:
            target[row, i] = score
    return target


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
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(f"{folder}: no trained model here (missing {CONFIG_FILE}); run `train` first")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    vision, text = (AutoModel.from_config(AutoConfig.for_model(**meta[f"{part}_config"])) for part in ("vision", "text"))
    model = AnswerClassifier(vision, text, meta["answers"], ClassifierConfig(**meta["settings"]))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval(), ClassifierProcessor.from_pretrained(folder)


class ClassifierEngine:
    """The engine's surface for a classifier: the most likely answer and its log-probability for each row, and the
    next `alternatives` most likely.

    The prompt is not used (the classifier reads the bare question) and every decoding is the argmax."""

    cut_answers = 0  # a classifier never cuts an answer

    def __init__(self, model: AnswerClassifier, processor: ClassifierProcessor, images: Images, *,
                 batch_size: int = 32, max_length: int = 128, alternatives: int = 0) -> None:  # fmt: skip
        self.model, self.tok, self.images = model, processor.tokenizer, images
        self.batch_size, self.max_length, self.alternatives = batch_size, max_length, alternatives

    def max_new_tokens(self, d: DecodingConfig) -> int:
        return 0

    @torch.inference_mode()
    def _batch(self, questions: list[str], image_ids: list[str], rows: list[int]) -> list[Answer]:
        ids = self.tok([questions[r] for r in rows], truncation=True, max_length=self.max_length)["input_ids"]
        dev = next(self.model.parameters()).device
        inputs = question_batch(self.tok, self.images, [image_ids[r] for r in rows], ids)
        logits = self.model(**{k: v.to(dev) for k, v in inputs.items()}).logits
        return ranked_answers(rows, self.model.log_probs(logits), self.model.answers, self.alternatives)

    def answer(self, prompt: str, decoding: DecodingConfig, questions: list[str], image_ids: list[str],
               rows: list[int] | None = None, progress: Callable[[int], None] | None = None) -> Iterator[list[Answer]]:  # fmt: skip
        """An Answer for each row, yielded one batch (grouped by image) at a time."""
        rows = list(range(len(questions))) if rows is None else rows
        for batch in batches([image_ids[i] for i in rows], self.batch_size):
            yield self._batch(questions, image_ids, [rows[i] for i in batch])
            if progress:
                progress(len(batch))
