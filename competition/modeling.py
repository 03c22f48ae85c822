"""Build or load a LLaVA model + processor from config; apply a training mode; save and reload.

    python -m competition train -c configs/seed_llava_vicuna7b.yaml --fold 0 --dry-run

Sources: `tiny` (random-init, word-level tokenizer trained on the data, offline), `pretrained`
(a llava-hf checkpoint: hub id or folder), `from_parts` (CLIP vision tower + causal LM + a new
projector, optionally imported from an original-LLaVA `mm_projector.bin`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from competition.backbones import ConvStemConfig
from competition.config import LoraSettings, TrainConfig
from competition.errors import ConfigError
from competition.images import CLIP_MEAN, CLIP_STD
from competition.io import atomic_dir
from competition.model_config import ModelConfig
from competition.projector import import_llava_projector, new_projector, restore_projector
from competition.prompts import IMAGE_TOKEN
from competition.tokenizer import train_word_tokenizer
from competition.weights import load_buffers, save_buffers

META = "competition_model.json"
PROJECTOR_FILE = "projector.safetensors"


PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def best_precision() -> str:
    """'bf16' on a CUDA card that has it, 'fp16' on older CUDA cards (T4, V100), 'fp32' on CPU."""
    if not torch.cuda.is_available():
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX), where autocast to it is faster; asked
    through torch's own (private) CPU probes, so a torch without them answers no."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_precision(name: str, deepspeed: str | None = None) -> str:
    """train.precision with 'auto' resolved (on CPU: bf16 autocast where the CPU computes it, unless DeepSpeed runs,
    which casts the weights themselves; else fp32); a precision the machine lacks is a ConfigError."""
    if name == "auto":
        cpu_bf16 = not torch.cuda.is_available() and not deepspeed and cpu_computes_bf16()
        return "bf16" if cpu_bf16 else best_precision()
    if name == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.precision=fp16 needs a CUDA card; use auto, bf16 or fp32 on CPU")
    if name == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.precision=bf16: {torch.cuda.get_device_name()} has no bfloat16; use auto or fp16")
    return name


def local_device() -> torch.device:
    """This process's GPU (torchrun's LOCAL_RANK picks one of several), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def tf32_available() -> bool:
    """TF32 matmuls exist on CUDA cards of compute capability 8 (Ampere) and later."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def torch_dtype(name: str) -> torch.dtype:
    """torch dtype from its config name (model.dtype); 'auto' follows best_precision()."""
    if name == "auto":
        return PRECISION_DTYPES[best_precision()]
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def attn_implementation(name: str) -> str:
    """'auto' becomes flash_attention_2 when flash-attn and CUDA are there, else sdpa."""
    if name != "auto":
        return name
    if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        return "flash_attention_2"
    return "sdpa"


def patch_tokens(image_size: int, patch_size: int, strategy: str) -> int:
    """Image tokens a CLIP tower yields: its patches, plus CLS under the 'full' strategy."""
    return (image_size // patch_size) ** 2 + (1 if strategy == "full" else 0)


def vision_tokens(vision: Any, strategy: str) -> int:
    """Image tokens a vision config yields: a CLIP tower's patches (+ CLS), or a conv stem's map cells."""
    if vision.model_type == ConvStemConfig.model_type:
        return (vision.image_size // vision.reduction) ** 2
    return patch_tokens(vision.image_size, vision.patch_size, strategy)


def image_token_count(config: LlavaConfig) -> int:
    """Image tokens per image of a LLaVA config."""
    return vision_tokens(config.vision_config, config.vision_feature_select_strategy)


def make_processor(tokenizer: Any, image_size: int, patch_size: int, strategy: str, cls_token: bool = True) -> LlavaProcessor:
    """A LlavaProcessor whose image processor yields square `image_size` inputs; `patch_size` pixels a token, plus
    the tower's CLS token if it has one."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=int(cls_token),
    )


def tiny_vision(cfg: ModelConfig) -> CLIPVisionConfig | ConvStemConfig:
    """The vision config of model.tiny: a small CLIP ViT, or a strided conv stem."""
    t = cfg.tiny
    if t.vision == "conv_stem":
        sizes = [min(32 * 2**i, t.vision_hidden) for i in range(t.vision_layers - 1)] + [t.vision_hidden]
        vision = ConvStemConfig(hidden_sizes=sizes, strides=[2] * t.vision_layers, image_size=t.image_size)
        if t.image_size % vision.reduction:
            raise ConfigError(f"model.tiny.image_size={t.image_size} is not a multiple of 2^vision_layers={vision.reduction}")
        if cfg.vision_feature_select_strategy != "full":
            raise ConfigError("model.tiny.vision=conv_stem has no CLS token to drop: set model.vision_feature_select_strategy: full")
        return vision
    if t.image_size % t.patch_size:
        raise ConfigError(f"model.tiny.image_size={t.image_size} is not a multiple of patch_size={t.patch_size}")
    return CLIPVisionConfig(
        hidden_size=t.vision_hidden,
        intermediate_size=t.vision_intermediate,
        num_hidden_layers=t.vision_layers,
        num_attention_heads=t.vision_heads,
        image_size=t.image_size,
        patch_size=t.patch_size,
        attention_dropout=0.0,
    )


def build_tiny(cfg: ModelConfig, texts: Iterable[str], seed: int) -> tuple[LlavaForConditionalGeneration, Any]:
    """Random-init LLaVA from small vision and Llama configs; nothing is downloaded."""
    t = cfg.tiny
    vision = tiny_vision(cfg)
    tok = train_word_tokenizer(texts)
    n_image = vision_tokens(vision, cfg.vision_feature_select_strategy)
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=t.text_hidden,
        intermediate_size=t.text_intermediate,
        num_hidden_layers=t.text_layers,
        num_attention_heads=t.text_heads,
        num_key_value_heads=t.text_heads,
        max_position_embeddings=n_image + 512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        image_seq_length=n_image,
    )
    torch.manual_seed(seed)
    with local_device():  # built where it runs: a real-size random init takes seconds on a GPU, minutes on a CPU
        model = LlavaForConditionalGeneration(config)
    for layer in (model.model.multi_modal_projector.linear_1, model.model.multi_modal_projector.linear_2):
        layer.reset_parameters()  # PyTorch's fan-in init: lets the loss reach a random vision tower sooner
    model = model.to(torch_dtype(cfg.dtype))
    set_generation_ids(model, tok)
    conv = isinstance(vision, ConvStemConfig)
    patch = vision.reduction if conv else t.patch_size
    return model, make_processor(tok, t.image_size, patch, cfg.vision_feature_select_strategy, cls_token=not conv)


def set_generation_ids(model: Any, tokenizer: Any) -> None:
    """Pad/EOS/BOS ids of the tokenizer in the generation config (custom tokenizers lack them)."""
    gc = model.generation_config
    gc.pad_token_id = tokenizer.pad_token_id
    gc.eos_token_id = tokenizer.eos_token_id
    gc.bos_token_id = tokenizer.bos_token_id


def load_pretrained(name_or_path: str, cfg: ModelConfig) -> tuple[LlavaForConditionalGeneration, Any]:
    """A llava-hf checkpoint (hub id or local folder) with its processor."""
    model = LlavaForConditionalGeneration.from_pretrained(
        name_or_path, dtype=torch_dtype(cfg.dtype), attn_implementation=attn_implementation(cfg.attn_implementation)
    )
    model = restore_projector(model)
    processor = AutoProcessor.from_pretrained(name_or_path)
    if processor.tokenizer.pad_token_id is None:
        processor.tokenizer.pad_token = processor.tokenizer.unk_token or processor.tokenizer.eos_token
    processor.tokenizer.padding_side = "left"
    set_generation_ids(model, processor.tokenizer)
    return model, processor


def build_from_parts(cfg: ModelConfig, seed: int = 0) -> tuple[LlavaForConditionalGeneration, Any]:
    """CLIP vision tower + causal LM + a new projector (the original LLaVA recipe), seeded."""
    if not cfg.vision_tower or not cfg.language_model:
        raise ConfigError("model.source=from_parts needs model.vision_tower and model.language_model")
    dtype, attn = torch_dtype(cfg.dtype), attn_implementation(cfg.attn_implementation)
    vision = CLIPVisionModel.from_pretrained(cfg.vision_tower, dtype=dtype, attn_implementation=attn)
    lm = AutoModelForCausalLM.from_pretrained(cfg.language_model, dtype=dtype, attn_implementation=attn)
    tok = AutoTokenizer.from_pretrained(
        cfg.language_model, padding_side="left", extra_special_tokens={"image_token": IMAGE_TOKEN}
    )
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if len(tok) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tok))
    v = vision.config
    config = LlavaConfig(
        vision_config=v,
        text_config=lm.config,
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        projector_hidden_act="linear" if cfg.projector_type == "linear" else "gelu",
        image_seq_length=patch_tokens(v.image_size, v.patch_size, cfg.vision_feature_select_strategy),
        mm_projector_type=cfg.projector_type,
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = lm.model
    model.lm_head = lm.lm_head
    torch.manual_seed(seed)
    model.model.multi_modal_projector = new_projector(config).to(dtype)
    if cfg.projector:
        import_llava_projector(model, Path(cfg.projector), cfg.projector_type)
    set_generation_ids(model, tok)
    return model, make_processor(tok, v.image_size, v.patch_size, cfg.vision_feature_select_strategy)


def build_base(cfg: ModelConfig, texts: Iterable[str], seed: int) -> tuple[LlavaForConditionalGeneration, Any]:
    """The model training starts from, per model.source."""
    if cfg.source == "tiny":
        return build_tiny(cfg, texts, seed)
    if cfg.source == "pretrained":
        if not cfg.name_or_path:
            raise ConfigError("model.source=pretrained needs model.name_or_path (hub id or local folder)")
        return load_pretrained(cfg.name_or_path, cfg)
    return build_from_parts(cfg, seed)


# Module names of the parts across image-text-to-text families (LLaVA, PaliGemma, Gemma 3: vision_tower and
# multi_modal_projector; Idefics3/SmolVLM: vision_model and connector; Qwen-VL: visual with its merger).
PROJECTOR_PARTS = ("multi_modal_projector", "connector", "merger")
VISION_PARTS = ("vision_tower", "vision_model", "visual")


def part_of(name: str) -> str:
    """'vision', 'projector' or 'language' for a parameter name of a (PEFT-wrapped) image-text-to-text model."""
    if any(part in name for part in PROJECTOR_PARTS):
        return "projector"
    if any(part in name for part in VISION_PARTS):
        return "vision"
    return "language"


def apply_mode(model: LlavaForConditionalGeneration, train: TrainConfig) -> Any:
    """Freeze or wrap the model for train.mode (projector only, LoRA on the LM + projector, or full).

    Trainable weights are kept in float32 (`trainable_in_float32`).
    """
    model.model.multi_modal_projector.register_forward_pre_hook(_inputs_to_weight_dtype)
    if train.mode == "full":
        model.requires_grad_(True)
    elif train.mode == "projector":
        model.requires_grad_(False)
        model.model.multi_modal_projector.requires_grad_(True)
    else:
        model = wrap_lora(model, train.lora)
    return trainable_in_float32(model)


def trainable_in_float32(model: Any) -> Any:
    """Trainable weights in float32 whatever model.dtype is: a bf16 weight cannot take a small update
    (0.02 + 2e-5 == 0.02 in bf16); frozen weights keep their dtype."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


def _inputs_to_weight_dtype(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: features from a bf16/fp16 tower enter a float32 projector in float32."""
    return (args[0].to(module.linear_1.weight.dtype), *args[1:])


def wrap_lora(model: LlavaForConditionalGeneration, lora: LoraSettings) -> Any:
    """PEFT LoRA on the language model's linear layers; the projector trains fully."""
    from peft import LoraConfig, get_peft_model

    targets = r"^model\.language_model\..*\.(" + "|".join(lora.target_modules) + r")$"
    peft_cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        modules_to_save=["multi_modal_projector"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def save_trained(model: Any, processor: Any, out: Path, mode: str, base: str | None, base_model: Any = None) -> None:
    """Write the fine-tuned model to `out` atomically: full weights, a LoRA adapter, or the projector.

    `base` names what adapter-only saves sit on (a hub id/folder); when None, `base_model` (the
    untouched starting model) is saved beside them.
    """
    from safetensors.torch import save_file

    meta: dict[str, Any] = {"mode": mode, "base": base}
    with atomic_dir(out) as tmp:
        if mode == "lora":
            model.save_pretrained(tmp)
            if base is None:
                base_model.save_pretrained(tmp / "base")
        elif mode == "projector":
            proj = model.model.multi_modal_projector.state_dict()
            save_file({k: v.contiguous() for k, v in proj.items()}, str(tmp / PROJECTOR_FILE))
            if base is None:
                base_model.save_pretrained(tmp / "base")
        else:
            model.save_pretrained(tmp)
        if mode != "full":
            save_buffers(model, tmp)
        processor.save_pretrained(tmp)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")


def load_trained(model_dir: Path, cfg: ModelConfig) -> tuple[LlavaForConditionalGeneration, Any]:
    """Load what save_trained wrote, ready for inference (LoRA merged, eval mode, on this process's GPU if any)."""
    meta_path = model_dir / META
    if not meta_path.is_file():
        raise ConfigError(f"{model_dir}: no trained model here (missing {META}); run `train` first")
    meta = json.loads(meta_path.read_text())
    dtype, attn = torch_dtype(cfg.dtype), attn_implementation(cfg.attn_implementation)
    processor = AutoProcessor.from_pretrained(model_dir)
    if meta["mode"] == "full":
        model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn)
    else:
        base_dir = meta["base"] or str(model_dir / "base")
        if meta["base"] and cfg.source == "from_parts":
            model, _ = build_from_parts(cfg)
        else:
            model = LlavaForConditionalGeneration.from_pretrained(base_dir, dtype=dtype, attn_implementation=attn)
    model = restore_projector(model)
    if meta["mode"] != "full":
        if meta["mode"] == "lora":
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, model_dir).merge_and_unload()
        else:
            from safetensors.torch import load_file

            model.model.multi_modal_projector.load_state_dict(load_file(str(model_dir / PROJECTOR_FILE)))
        load_buffers(model, model_dir)
    set_generation_ids(model, processor.tokenizer)
    processor.tokenizer.padding_side = "left"
    return model.to(local_device()).eval(), processor
