"""The model a run will build, planned without weights or downloads: architecture, sizes, tokenizer.

    python -m competition train -c configs/seed_llava_vicuna7b.yaml --fold 0 --dry-run
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from competition.config import ModelConfig
from competition.errors import ConfigError
from competition.modeling import build_tiny, patch_tokens
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


def _local_config(name: str) -> Any | None:
    """The config of a local folder or of the HF cache, never downloaded; None if absent."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        return None


def plan_model(cfg: ModelConfig) -> LlavaForConditionalGeneration:
    """The model's architecture on the meta device (no weights, no download), for counting and planning."""
    if cfg.source == "tiny":
        model, _ = build_tiny(cfg, [], 0)
        return model
    if cfg.source == "pretrained":
        config = _local_config(cfg.name_or_path or "")
        if config is None and cfg.name_or_path in KNOWN_LLAVA:
            config = LlavaConfig(**KNOWN_LLAVA[cfg.name_or_path])
    else:
        vision = _local_config(cfg.vision_tower or "")
        vision = getattr(vision, "vision_config", vision)
        if vision is None and cfg.vision_tower in KNOWN_VISION:
            vision = CLIPVisionConfig(**KNOWN_VISION[cfg.vision_tower])
        text = _local_config(cfg.language_model or "")
        if text is None and cfg.language_model in KNOWN_LM:
            text = LlamaConfig(**KNOWN_LM[cfg.language_model])
        config = None
        if vision is not None and text is not None:
            config = LlavaConfig(
                vision_config=vision,
                text_config=text,
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                projector_hidden_act="linear" if cfg.projector_type == "linear" else "gelu",
                mm_projector_type=cfg.projector_type,
                image_seq_length=patch_tokens(vision.image_size, vision.patch_size, cfg.vision_feature_select_strategy),
            )
    if config is None:
        raise ConfigError(f"model.source={cfg.source}: no local config for its weights; put them on disk to plan")
    with torch.device("meta"):
        return restore_projector(LlavaForConditionalGeneration(config))


def check_tokenizer(cfg: ModelConfig) -> str:
    """Load the tokenizer a run will use from disk (no download): a line for the plan, or a ConfigError."""
    name = cfg.name_or_path if cfg.source == "pretrained" else cfg.language_model
    if cfg.source == "tiny":
        return "tokenizer: word-level, trained on the data's text"
    if _local_config(name or "") is None:
        return f"tokenizer: {name} is not on disk; not checked"
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as e:  # transformers raises many kinds here (ImportError for a missing sentencepiece)
        raise ConfigError(f"{name}: tokenizer does not load: {str(e).splitlines()[0]}") from None
    pad = "" if tok.pad_token is not None else "; no pad token (unk or eos will pad)"
    return f"tokenizer: {type(tok).__name__}, {len(tok):,} tokens{pad}"
