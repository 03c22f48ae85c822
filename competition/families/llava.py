"""model.family=llava: LlavaForConditionalGeneration, tiny (random-init), pretrained (llava-hf) or from parts
(CLIP tower + causal LM + projector); projector / LoRA / full training; generated answers.

    python -m competition train -c configs/demo.yaml --fold 0
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from competition.config import Config, ModelConfig
from competition.data import Competition
from competition.dataset import TrainCollator, TrainSet
from competition.engine import Engine
from competition.errors import ConfigError
from competition.families.base import Blueprint, register, tokenizer_texts
from competition.families.hub import local_config, tokenizer_line
from competition.images import Images, ImageTransform
from competition.modeling import (
    apply_mode,
    build_base,
    build_tiny,
    image_token_count,
    load_trained,
    patch_tokens,
    save_trained,
)
from competition.projector import restore_projector

KNOWN_VISION: dict[str, dict[str, int]] = {
    "openai/clip-vit-large-patch14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                          num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768),
    "openai/clip-vit-large-patch14-336": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                              num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
}  # fmt: skip
LLAMA_7B = dict(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, vocab_size=32000
)
KNOWN_LM: dict[str, dict[str, int]] = {"lmsys/vicuna-7b-v1.3": LLAMA_7B, "lmsys/vicuna-7b-v1.5": LLAMA_7B}
KNOWN_LLAVA = {"llava-hf/llava-1.5-7b-hf": {"text_config": {**LLAMA_7B, "vocab_size": 32064}, "image_token_id": 32000}}


def parts_config(cfg: ModelConfig) -> LlavaConfig | None:
    """The LlavaConfig of model.source=from_parts from its tower's and LM's configs (on disk or known), or None."""
    vision = local_config(cfg.vision_tower or "")
    vision = getattr(vision, "vision_config", vision)
    if vision is None and cfg.vision_tower in KNOWN_VISION:
        vision = CLIPVisionConfig(**KNOWN_VISION[cfg.vision_tower])
    text = local_config(cfg.language_model or "")
    if text is None and cfg.language_model in KNOWN_LM:
        text = LlamaConfig(**KNOWN_LM[cfg.language_model])
    if vision is None or text is None:
        return None
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        projector_hidden_act="linear" if cfg.projector_type == "linear" else "gelu",
        mm_projector_type=cfg.projector_type,
        image_seq_length=patch_tokens(vision.image_size, vision.patch_size, cfg.vision_feature_select_strategy),
    )


def plan_model(cfg: ModelConfig) -> LlavaForConditionalGeneration:
    """The model's architecture on the meta device (no weights, no download), for counting and planning."""
    from accelerate import init_empty_weights

    if cfg.source == "tiny":
        with init_empty_weights():  # parameters on the meta device, though build_tiny builds on local_device()
            model, _ = build_tiny(cfg, [], 0)
        return model
    if cfg.source == "pretrained":
        config = local_config(cfg.name_or_path or "")
        if config is None and cfg.name_or_path in KNOWN_LLAVA:
            config = LlavaConfig(**KNOWN_LLAVA[cfg.name_or_path])
    else:
        config = parts_config(cfg)
    if config is None:
        raise ConfigError(f"model.source={cfg.source}: no local config for its weights; put them on disk to plan")
    with torch.device("meta"):
        return restore_projector(LlavaForConditionalGeneration(config))


@register("llava")
class Llava:
    """LlavaForConditionalGeneration: tiny, pretrained or from parts; projector / LoRA / full; generated answers."""

    uses_trainer = True
    soft_answers = False

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.base_name: str | None = None
        self.pristine: Any = None

    @property
    def questions_per_example(self) -> int:
        return self.cfg.train.pack_questions  # an image's questions share one conversation

    def check(self) -> None:
        """Nothing to refuse before building: the sources' own errors name their keys."""

    def describe(self) -> tuple[str, str]:
        m = self.cfg.model
        if m.source == "tiny":
            t = m.tiny
            side = f"{t.image_size}px/{t.patch_size}" if t.vision == "clip" else f"{t.image_size}px/{2**t.vision_layers}"
            return m.source, f"{t.vision} {t.vision_layers}x{t.vision_hidden} @ {side} + Llama {t.text_layers}x{t.text_hidden}"
        if m.source == "pretrained":
            return m.source, str(m.name_or_path)
        proj = f" + projector {m.projector}" if m.projector else " + new projector"
        return m.source, f"{m.vision_tower} (layer {m.vision_feature_layer}) + {m.language_model}{proj} [{m.projector_type}]"

    def blueprint(self) -> Blueprint:
        from accelerate import init_empty_weights

        m = self.cfg.model
        with init_empty_weights():  # LoRA's new layers on the meta device too
            model = apply_mode(plan_model(m), self.cfg.train)
        name = m.name_or_path if m.source == "pretrained" else m.language_model
        tokenizer = "tokenizer: word-level, trained on the data's text" if m.source == "tiny" else tokenizer_line(name)
        return Blueprint(model, *self.describe(), tokenizer)

    def build(self, comp: Competition, rows: pd.DataFrame) -> tuple[Any, Any]:
        """The model ready to train (train.mode applied) and its processor."""
        cfg = self.cfg
        model, processor = build_base(cfg.model, tokenizer_texts(comp), cfg.seed)
        self.base_name = None if cfg.model.source == "tiny" else (cfg.model.name_or_path or "from_parts")
        self.pristine = copy.deepcopy(model) if self.base_name is None and cfg.train.mode != "full" else None
        model = apply_mode(model, cfg.train)
        if cfg.train.gradient_checkpointing:
            model.enable_input_require_grads()
        return model, processor

    def train_set(self, model: Any, processor: Any, rows: pd.DataFrame) -> TrainSet:
        t = self.cfg.train
        return TrainSet(processor, t.prompt, rows, t.max_length, t.pack_questions)

    def images(self, comp: Competition, split: str, processor: Any, cache: bool) -> Images:
        """The split's images as the model reads them."""
        return Images(comp, split, ImageTransform(processor, self.cfg.model.image_aspect_ratio), cache)

    def collator(self, images: Images, model: Any, processor: Any) -> TrainCollator:
        return TrainCollator(images, model.config.image_token_id, image_token_count(model.config),
                             processor.tokenizer.pad_token_id)  # fmt: skip

    def fit(self, model: Any, processor: Any, rows: pd.DataFrame) -> Any:
        raise NotImplementedError("the llava family trains with HF Trainer")

    def save(self, model: Any, processor: Any, out: Path) -> None:
        save_trained(model, processor, out, self.cfg.train.mode, self.base_name, self.pristine)

    def load(self, folder: Path) -> tuple[Any, Any]:
        return load_trained(folder, self.cfg.model)

    def engine(self, model: Any, processor: Any, images: Images, vocabulary: list[str]) -> Engine:
        p = self.cfg.predict
        return Engine(model, processor, images, batch_size=p.batch_size, prefix_cache=p.prefix_cache,
                      max_length=p.max_length, vocabulary=vocabulary, alternatives=p.alternatives)  # fmt: skip
