"""model.family=vlm: any image-text-to-text checkpoint of transformers (competition/vlm.py), prompted through its
processor's chat template; projector / LoRA / full training; generated answers.

    python -m competition train -c configs/qwen25vl_7b_lora.yaml --fold 0 --dry-run
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import AutoConfig

from competition.config import Config, ModelConfig
from competition.data import Competition
from competition.errors import ConfigError
from competition.families.base import Blueprint, register
from competition.families.hub import local_config, tokenizer_line
from competition.images import RawImages
from competition.vlm import (
    VlmCollator,
    VlmEngine,
    VlmSet,
    apply_vlm_mode,
    load_vlm,
    load_vlm_trained,
    save_vlm,
    torchvision_missing,
)

QWEN_VISION = dict(depth=32, hidden_size=1280, num_heads=16, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
MROPE = {"rope_type": "default", "mrope_section": [16, 24, 24]}
KNOWN_VLM: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-VL-7B-Instruct": dict(
        model_type="qwen2_5_vl", image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
        text_config=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, vocab_size=152064, rope_scaling=MROPE, tie_word_embeddings=False),
        vision_config=dict(QWEN_VISION, intermediate_size=3420, out_hidden_size=3584, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        tie_word_embeddings=False),
    "Qwen/Qwen2-VL-2B-Instruct": dict(
        model_type="qwen2_vl", image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
        text_config=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, rope_scaling=MROPE, tie_word_embeddings=True),
        vision_config={**{k: v for k, v in QWEN_VISION.items() if k != "hidden_size"}, "embed_dim": 1280,
                       "hidden_size": 1536, "mlp_ratio": 4},
        tie_word_embeddings=True),
}  # fmt: skip


def vlm_config(cfg: ModelConfig) -> Any | None:
    """An image-text-to-text checkpoint's config from disk or a known one; None if neither (never downloaded)."""
    config = local_config(cfg.name_or_path or "")
    if config is None and cfg.name_or_path in KNOWN_VLM:
        known = dict(KNOWN_VLM[cfg.name_or_path])
        config = AutoConfig.for_model(known.pop("model_type"), **known)
    return config


def plan_vlm(cfg: ModelConfig) -> Any:
    """An image-text-to-text model's architecture on the meta device, from its config on disk or a known one."""
    from transformers import AutoModelForImageTextToText

    config = vlm_config(cfg)
    if config is None:
        raise ConfigError(f"model.name_or_path={cfg.name_or_path}: no config on disk; put the checkpoint there to plan")
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


@register("vlm")
class Vlm:
    """Any AutoModelForImageTextToText checkpoint with its processor's chat template; generated answers."""

    uses_trainer = True
    soft_answers = False
    questions_per_example = 1

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def check(self) -> None:
        """A processor that needs torchvision when it is not installed (a checkpoint not on disk: later)."""
        if (config := vlm_config(self.cfg.model)) is not None and (why := torchvision_missing(config.model_type)):
            raise ConfigError(f"model.name_or_path={self.cfg.model.name_or_path}: {why}")

    def describe(self) -> tuple[str, str]:
        return "vlm", f"{self.cfg.model.name_or_path} (AutoModelForImageTextToText)"

    def blueprint(self) -> Blueprint:
        from accelerate import init_empty_weights

        notes = []
        with init_empty_weights():  # LoRA's new layers on the meta device too
            model = plan_vlm(self.cfg.model)
            if why := torchvision_missing(model.config.model_type):
                notes.append(f"processor: {why}; `train` refuses until then")
            model = apply_vlm_mode(model, self.cfg.train)
        return Blueprint(model, *self.describe(), tokenizer_line(self.cfg.model.name_or_path), notes)

    def build(self, comp: Competition, rows: pd.DataFrame) -> tuple[Any, Any]:
        model, processor = load_vlm(self.cfg.model)
        model = apply_vlm_mode(model, self.cfg.train)
        if self.cfg.train.gradient_checkpointing:
            model.enable_input_require_grads()
        return model, processor

    def images(self, comp: Competition, split: str, processor: Any, cache: bool) -> RawImages:
        return RawImages(comp, split, cache)

    def train_set(self, model: Any, processor: Any, rows: pd.DataFrame) -> VlmSet:
        return VlmSet(processor, self.cfg.train.prompt, rows)

    def collator(self, images: RawImages, model: Any, processor: Any) -> VlmCollator:
        return VlmCollator(images, processor)

    def fit(self, model: Any, processor: Any, rows: pd.DataFrame) -> Any:
        raise NotImplementedError("the vlm family trains with HF Trainer")

    def save(self, model: Any, processor: Any, out: Path) -> None:
        save_vlm(model, processor, out, self.cfg.train.mode, str(self.cfg.model.name_or_path))

    def load(self, folder: Path) -> tuple[Any, Any]:
        return load_vlm_trained(folder, self.cfg.model)

    def engine(self, model: Any, processor: Any, images: RawImages, vocabulary: list[str]) -> VlmEngine:
        p = self.cfg.predict
        return VlmEngine(model, processor, images, batch_size=p.batch_size, prefix_cache=False,
                         max_length=p.max_length, vocabulary=vocabulary)  # fmt: skip
