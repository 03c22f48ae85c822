"""What a training run will do, planned without weights or downloads: architecture, sizes, batches,
evaluation and checkpoints, tokenizer; printed by --dry-run and at the start of every run.

    python -m competition train -c configs/seed_llava_vicuna7b.yaml --fold 0 --dry-run
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from competition.classifier import AnswerClassifier, backbone_config, build_backbone, check_backbones, refuse_lora
from competition.config import ClassifierConfig, Config, ModelConfig
from competition.data import load_competition
from competition.errors import ConfigError, DataError
from competition.images import output_size
from competition.modeling import (
    apply_mode,
    build_tiny,
    count_parameters,
    patch_tokens,
    resolve_precision,
    tf32_available,
    torch_dtype,
)
from competition.projector import restore_projector
from competition.vlm import apply_vlm_mode, torchvision_missing

DACON_TRAIN_QUESTIONS = 359_521  # the planned data size when the competition folder is not there
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
        from accelerate import init_empty_weights

        with init_empty_weights():  # parameters on the meta device, though build_tiny builds on local_device()
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


def vlm_config(cfg: ModelConfig) -> Any | None:
    """An image-text-to-text checkpoint's config from disk or a known one; None if neither (never downloaded)."""
    config = _local_config(cfg.name_or_path or "")
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


def check_tokenizer(cfg: ModelConfig) -> str:
    """Load the tokenizer a run will use from disk (no download): a line for the plan, or a ConfigError."""
    vlm = cfg.family == "vlm"
    name = cfg.name_or_path if cfg.source == "pretrained" or vlm else cfg.language_model
    if cfg.source == "tiny" and not vlm:
        return "tokenizer: word-level, trained on the data's text"
    if _local_config(name or "") is None:
        return f"tokenizer: {name} is not on disk; not checked"
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as e:  # transformers raises many kinds here (ImportError for a missing sentencepiece)
        raise ConfigError(f"{name}: tokenizer does not load: {str(e).splitlines()[0]}") from None
    pad = "" if tok.pad_token is not None else "; no pad token (unk or eos will pad)"
    return f"tokenizer: {type(tok).__name__}, {len(tok):,} tokens{pad}"


def world_size() -> int:
    """Processes in this run (torchrun / accelerate set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def grad_accum(cfg: Config) -> int:
    """Accumulation steps that keep train.effective_batch_size across process counts."""
    t = cfg.train
    if t.effective_batch_size is None:
        return t.grad_accum
    per_step = t.per_device_batch_size * world_size()
    if t.effective_batch_size % per_step:
        raise ConfigError(
            f"train.effective_batch_size={t.effective_batch_size} is not a multiple of "
            f"per_device_batch_size={t.per_device_batch_size} x {world_size()} processes"
        )
    return t.effective_batch_size // per_step


@dataclass
class Plan:
    """What a training run will do, printed by --dry-run and at the start of a run."""

    source: str
    parts: str
    mode: str
    trainable: int
    total: int
    examples: int
    per_device: int
    grad_accum: int
    processes: int
    steps_per_epoch: int
    epochs: float
    max_steps: int
    save_steps: int
    save_key: str  # the config key that sets save_steps
    precision: str
    frozen_dtype: str
    evaluation: str

    @property
    def effective_batch(self) -> int:
        return self.per_device * self.grad_accum * self.processes

    def lines(self) -> list[str]:
        return [
            f"model: {self.source} ({self.parts})",
            f"mode: {self.mode}; trainable parameters {self.trainable:,} of {self.total:,}",
            f"batch: {self.per_device} per device x {self.grad_accum} accumulation x {self.processes} processes"
            f" = effective {self.effective_batch}",
            f"data: {self.examples:,} examples; {self.steps_per_epoch:,} optimizer steps per epoch; {self.epochs:g} epochs",
            f"precision: {self.precision} compute, trainable weights float32, frozen weights {self.frozen_dtype}; "
            f"TF32 {'on' if tf32_available() else 'off (not on this machine)'}",
            self.evaluation,
            self.checkpoint_line(),
        ]

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps > 0 else int(self.steps_per_epoch * self.epochs)

    def checkpoint_line(self) -> str:
        """How often a checkpoint is written, or a warning that none will be."""
        if self.save_steps > self.total_steps:
            return (
                f"checkpoints: NONE ({self.save_key}={self.save_steps} > {self.total_steps:,} steps): "
                "a killed run restarts from step 0"
            )
        return f"checkpoints: every {self.save_steps:,} steps of {self.total_steps:,} (a killed run resumes from the last)"


class NotOnDisk(ConfigError):
    """A named checkpoint whose config is neither on disk nor known: the plan needs it, a run downloads it."""


KNOWN_BACKBONES: dict[str, dict[str, Any]] = {
    "google/siglip-so400m-patch14-384": dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                                             num_hidden_layers=27, num_attention_heads=16, image_size=384, patch_size=14),
    "google-bert/bert-base-uncased": dict(model_type="bert"),  # BertConfig's defaults are bert-base's
}  # fmt: skip


def classifier_part(part: str, name: str | None, fields: dict[str, Any]) -> tuple[Any, str, bool]:
    """A classifier backbone's (part: vision or text) config for planning: a named one's from disk (never
    downloaded) or its published shape, else the random-init fields; its config key; whether the named weights
    are missing from disk."""
    key = f"model.classifier.{part}"
    if not name:
        return backbone_config(f"{key}_config", fields), f"{key}_config", False
    config = _local_config(name)
    if config is not None:
        return getattr(config, "vision_config", config) if part == "vision" else config, key, False
    if name in KNOWN_BACKBONES:
        return AutoConfig.for_model(**KNOWN_BACKBONES[name]), key, True
    where = "a folder without config.json" if Path(name).is_dir() else "no such folder, nor in the Hugging Face cache"
    raise NotOnDisk(f"{key}={name}: not on disk ({where}) and of no known shape, so it cannot be planned offline "
                    "(`train` downloads a hub id)")  # fmt: skip


def classifier_image_size(c: ClassifierConfig, vision_config: Any) -> tuple[int, int]:
    """(width, height) the classifier's images reach the vision tower at: its image processor's output (a named
    backbone's, when on disk), else the tower's image_size, else model.classifier.image_size."""
    if not c.vision:
        return c.image_size, c.image_size
    try:
        return output_size(AutoImageProcessor.from_pretrained(c.vision, local_files_only=True))
    except (OSError, ValueError):
        side = getattr(vision_config, "image_size", c.image_size)
        return side, side


def plan_classifier(c: ClassifierConfig) -> tuple[Any, list[str]]:
    """The classifier on the meta device from its backbone configs (a named backbone's read from disk or known),
    with max_answers answers, checked (classifier.check_backbones); and the named backbones not on disk."""
    vc, vkey, v_absent = classifier_part("vision", c.vision, c.vision_config)
    tc, tkey, t_absent = classifier_part("text", c.text, c.text_config)
    with torch.device("meta"):
        vision, text = build_backbone(vkey, vc), build_backbone(tkey, tc)
        model = AnswerClassifier(getattr(vision, "vision_model", vision), text, ["?"] * c.max_answers, c)
    check_backbones(model, (vkey, tkey), classifier_image_size(c, vc))
    return model, [name for name, absent in ((c.vision, v_absent), (c.text, t_absent)) if absent]


def check_model(cfg: Config) -> None:
    """Refuse, before a run writes anything, what cannot be built or run here (one line naming the key): a
    classifier's backbones built on the meta device, LoRA on a classifier, a vlm processor that needs torchvision.
    Nothing is downloaded: a checkpoint that is not on disk is left to the run."""
    if cfg.model.family == "classifier":
        refuse_lora(cfg.train.mode)
        with contextlib.suppress(NotOnDisk):
            plan_classifier(cfg.model.classifier)
    elif cfg.model.family == "vlm" and (config := vlm_config(cfg.model)) is not None:
        if why := torchvision_missing(config.model_type):
            raise ConfigError(f"model.name_or_path={cfg.model.name_or_path}: {why}")


def describe_parts(cfg: Config) -> str:
    """Human-readable model parts of the config."""
    m = cfg.model
    if m.family == "classifier":
        c = m.classifier
        vision = c.vision or f"random-init {c.vision_config.get('model_type')} @ {c.image_size}px"
        text = c.text or f"random-init {c.text_config.get('model_type')}"
        return f"{vision} + {text} -> {c.max_answers:,} answers at most"
    if m.family == "vlm":
        return f"{m.name_or_path} (AutoModelForImageTextToText)"
    if m.source == "tiny":
        t = m.tiny
        vision = f"{t.image_size}px/{t.patch_size}" if t.vision == "clip" else f"{t.image_size}px/{2**t.vision_layers}"
        return f"{t.vision} {t.vision_layers}x{t.vision_hidden} @ {vision} + Llama {t.text_layers}x{t.text_hidden}"
    if m.source == "pretrained":
        return str(m.name_or_path)
    proj = f" + projector {m.projector}" if m.projector else " + new projector"
    return f"{m.vision_tower} (layer {m.vision_feature_layer}) + {m.language_model}{proj} [{m.projector_type}]"


def describe_evaluation(t: Any) -> str:
    """The plan's line on in-training evaluation, early stopping and the time budget."""
    if t.eval_steps == 0:
        return "evaluation: none (train.eval_steps=0): the last step is the model"
    where = f"an inner split ({t.eval_fraction:.0%} of the training images)" if t.eval_split == "inner" else (
        "the fold's validation questions (optimistic)")  # fmt: skip
    every = "every epoch" if t.eval_steps is None else f"every {t.eval_steps:,} steps"
    stop = f"stops after {t.patience} without a gain over {t.min_delta:g}" if t.patience else "no early stop"
    budget = f"; at most {t.max_minutes:g} minutes" if t.max_minutes else ""
    return f"evaluation: {every}, {t.eval_questions:,} questions of {where}; keeps the best; {stop}{budget}"


def make_plan(cfg: Config, model: torch.nn.Module, examples: int) -> Plan:
    """The run's plan from the config, the (possibly meta-device) model and the example count."""
    trainable, total = count_parameters(model)
    ga = grad_accum(cfg)
    t = cfg.train
    per_step = t.per_device_batch_size * ga * world_size()
    steps_per_epoch = max(1, -(-examples // per_step))
    save_steps = t.save_steps if t.eval_steps == 0 else t.eval_steps or steps_per_epoch
    save_key = "train.save_steps" if t.eval_steps == 0 else "train.eval_steps"
    return Plan(
        cfg.model.source if cfg.model.family == "llava" else cfg.model.family,
        describe_parts(cfg),
        cfg.train.mode,
        trainable,
        total,
        examples,
        cfg.train.per_device_batch_size,
        ga,
        world_size(),
        steps_per_epoch,
        t.epochs,
        t.max_steps,
        save_steps,
        save_key,
        resolve_precision(t.precision),
        str(torch_dtype(cfg.model.dtype)).removeprefix("torch."),
        describe_evaluation(t),
    )


def planned_model(cfg: Config) -> tuple[Any, str, list[str]]:
    """The run's model on the meta device (train.mode applied), its tokenizer line and notes for the plan."""
    from accelerate import init_empty_weights

    m, notes = cfg.model, []
    if m.family == "classifier":
        refuse_lora(cfg.train.mode)
        model, absent = plan_classifier(m.classifier)
        c = m.classifier
        tokenizer = f"tokenizer: {c.text}'s" if c.text else "tokenizer: word-level, trained on the data's text"
        if absent:
            notes.append(f"weights: {' and '.join(absent)} not on disk: planned from the published shapes; "
                         "`train` downloads them")  # fmt: skip
        return model, tokenizer, notes
    with init_empty_weights():  # LoRA's new layers on the meta device too
        if m.family == "vlm":
            model = plan_vlm(m)
            if why := torchvision_missing(model.config.model_type):
                notes.append(f"processor: {why}; `train` refuses until then")
            model = apply_vlm_mode(model, cfg.train)
        else:
            model = apply_mode(plan_model(m), cfg.train)
    return model, check_tokenizer(m), notes


def dry_run_plan(cfg: Config, fold: int) -> list[str]:
    """The plan of a run without building weights or downloading: meta-device model, data size."""
    model, tokenizer, notes = planned_model(cfg)
    try:
        n_train = len(load_competition(cfg.data).train)
        source = f"{cfg.data.root}"
    except DataError:
        n_train, source = DACON_TRAIN_QUESTIONS, f"the Dacon size ({cfg.data.root} not found)"
    examples = n_train - n_train // cfg.folds.k
    if cfg.train.eval_steps != 0 and cfg.train.eval_split == "inner":
        examples -= round(examples * cfg.train.eval_fraction)  # the images held out for in-training evaluation
    if cfg.model.family == "llava":
        examples = -(-examples // cfg.train.pack_questions)  # about: an image's questions share a conversation
    plan = make_plan(cfg, model, examples)
    return [f"fold {fold} of {cfg.folds.k}; training questions from {source}", *plan.lines(), tokenizer, *notes]
