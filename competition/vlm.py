"""The `vlm` family: any image-text-to-text model of transformers (AutoModelForImageTextToText + AutoProcessor),
prompted through its processor's chat template; projector / LoRA / full training; batched generation.

    python -m competition train -c configs/qwen25vl_7b_lora.yaml --fold 0 --dry-run

A training example is the conversation rendered twice, without and with the answer: the tokens the
answer adds (the answer, the template's end of turn) are the labels, wherever the family's processor
puts its image tokens. A model without a chat template (PaliGemma) reads the bare request and a newline.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from competition.config import DecodingConfig, LoraSettings, TrainConfig
from competition.data import ANSWER, IMAGE, QUESTION
from competition.dataset import IGNORE, Examples
from competition.engine import Answer, Engine
from competition.errors import ConfigError
from competition.images import RawImages
from competition.io import atomic_dir
from competition.model_config import ModelConfig
from competition.modeling import (
    META,
    PROJECTOR_PARTS,
    VISION_PARTS,
    attn_implementation,
    local_device,
    part_of,
    torch_dtype,
    trainable_in_float32,
)
from competition.prompts import conversation, render, request
from competition.weights import TRAINABLE_FILE, load_buffers, save_buffers, save_trainable


def has_template(processor: Any) -> bool:
    return bool(getattr(processor, "chat_template", None))


def takes_suffix(processor: Any) -> bool:
    """A prefix-LM processor (PaliGemma's): its token_type_ids tell the prefix from the answer."""
    return "suffix" in getattr(type(processor).__call__, "__annotations__", {})


def prompt_text(processor: Any, prompt: str, question: str) -> str:
    """The model input up to the answer: the chat template's, or the bare request and a newline."""
    if has_template(processor):
        return render(prompt, question, processor)
    return request(prompt, question) + "\n"


def answered_text(processor: Any, prompt: str, question: str, answer: str) -> str:
    """The training text: prompt_text followed by the answer and the end of the assistant's turn."""
    head = prompt_text(processor, prompt, question)
    if not has_template(processor):
        return head + answer + processor.tokenizer.eos_token
    full = processor.apply_chat_template(conversation(prompt, question, answer))
    if not full.startswith(head):
        raise ConfigError(f"{type(processor).__name__}'s chat template does not render the prompt as the start of "
                          "the answered conversation, so the answer's tokens cannot be found")  # fmt: skip
    return full


def processor_class(model_type: str) -> Any:
    """The processor class AutoProcessor picks for a model type, or None."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    return getattr(transformers, PROCESSOR_MAPPING_NAMES.get(model_type) or "", None)


def torchvision_missing(model_type: str) -> str | None:
    """Why the processor of `model_type` cannot load here (its video half needs torchvision, not installed), in
    one line; None when it can."""
    cls = processor_class(model_type)
    if importlib.util.find_spec("torchvision") is not None or cls is None:
        return None
    if "video_processor" not in inspect.signature(cls.__init__).parameters:
        return None
    return (f"{cls.__name__} needs torchvision (its video processor), which is not installed: pip install "
            f"torchvision (the build matching torch {torch.__version__}), or pip install -e '.[gpu]'")  # fmt: skip


def require_torchvision(name_or_path: str) -> None:
    """A one-line ConfigError, before the processor's traceback, when the checkpoint's processor needs torchvision."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    from transformers import AutoConfig

    if why := torchvision_missing(AutoConfig.from_pretrained(name_or_path).model_type):
        raise ConfigError(f"model.name_or_path={name_or_path}: {why}")


def load_vlm(cfg: ModelConfig) -> tuple[Any, Any]:
    """The checkpoint model.name_or_path (hub id or folder) and its processor (model.processor_kwargs)."""
    if not cfg.name_or_path:
        raise ConfigError("model.family=vlm needs model.name_or_path (hub id or local folder)")
    require_torchvision(cfg.name_or_path)
    processor = AutoProcessor.from_pretrained(cfg.name_or_path, **cfg.processor_kwargs)
    model = AutoModelForImageTextToText.from_pretrained(
        cfg.name_or_path, dtype=torch_dtype(cfg.dtype), attn_implementation=attn_implementation(cfg.attn_implementation)
    )
    tok = processor.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, processor


def named_parts(model: torch.nn.Module, parts: tuple[str, ...]) -> list[str]:
    """Short names of the model's modules that are one of `parts` (for PEFT's modules_to_save)."""
    return sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] in parts})


def apply_vlm_mode(model: torch.nn.Module, train: TrainConfig) -> Any:
    """Freeze or wrap for train.mode: the projector alone, LoRA on the language model (+ the projector), or all.
    Trainable weights are kept in float32."""
    projector = named_parts(model, PROJECTOR_PARTS)
    if train.mode == "full":
        model.requires_grad_(True)
    elif train.mode == "projector":
        if not projector:
            raise ConfigError(f"train.mode=projector: {type(model).__name__} has none of {', '.join(PROJECTOR_PARTS)}")
        for n, p in model.named_parameters():
            p.requires_grad_(part_of(n) == "projector")
    else:
        model = wrap_vlm_lora(model, train.lora, projector)
    return trainable_in_float32(model)


def wrap_vlm_lora(model: torch.nn.Module, lora: LoraSettings, projector: list[str]) -> Any:
    """PEFT LoRA on the language model's linear layers named in lora.target_modules; the projector trains fully."""
    from peft import LoraConfig, get_peft_model

    skip = "|".join(VISION_PARTS + PROJECTOR_PARTS)
    targets = rf"^(?!.*\b({skip})\b).*\.({'|'.join(lora.target_modules)})$"
    peft_cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                          modules_to_save=projector or None, task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(model, peft_cfg)


class VlmSet(Examples):
    """Conversations rendered without and with their answers; input_ids (text only) give lengths for batching."""

    def __init__(self, processor: Any, prompt: str, rows: Any) -> None:
        tok = processor.tokenizer
        self.items = []
        for q, a, img in zip(rows[QUESTION], rows[ANSWER], rows[IMAGE], strict=True):
            head, full = prompt_text(processor, prompt, q), answered_text(processor, prompt, q, a)
            self.items.append({"prompt": head, "full": full, "image_id": img,
                               "input_ids": tok(full, add_special_tokens=False)["input_ids"]})  # fmt: skip


class VlmCollator:
    """A batch through the processor (images and text together, right-padded); labels on the answer tokens only."""

    def __init__(self, images: RawImages, processor: Any) -> None:
        self.images, self.processor = images, processor

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pics = [[im] for im in self.images([b["image_id"] for b in batch])]
        full = self.processor(text=[b["full"] for b in batch], images=pics, padding=True, padding_side="right",
                              return_tensors="pt")  # fmt: skip
        heads = self.processor(text=[b["prompt"] for b in batch], images=pics, padding=True, padding_side="right",
                               return_tensors="pt")["attention_mask"].sum(1)  # fmt: skip
        labels = full["input_ids"].clone()
        before_answer = torch.arange(labels.shape[1])[None] < heads[:, None]
        labels[before_answer | (full["attention_mask"] == 0)] = IGNORE
        out = dict(full)
        if takes_suffix(self.processor):  # prefix-LM families (PaliGemma): token type 1 marks the causal suffix
            out["token_type_ids"] = (labels != IGNORE).long()
        out["labels"] = labels
        return out


class VlmEngine(Engine):
    """The engine's batching, decodings (greedy, beam, sampling, constrained) and log-probabilities; the
    family's processor makes the inputs. Ranked decoding is LLaVA's alone."""

    def _batch(self, prompt: str, d: DecodingConfig, questions: list[str], image_ids: list[str], rows: list[int]
               ) -> list[Answer]:  # fmt: skip
        if d.search == "rank":
            raise ConfigError(f"decoding '{d.name}': rank is not available for model.family=vlm; use constrained")
        pics = [[im] for im in self.images([image_ids[r] for r in rows])]
        texts = [prompt_text(self.processor, prompt, questions[r]) for r in rows]
        inputs = self.processor(text=texts, images=pics, padding=True, padding_side="left", return_tensors="pt")
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
        keys = [f"{image_ids[r]}\0{questions[r]}" for r in rows]
        return self.generate(d, rows, keys, ids, mask, inputs)


def save_vlm(model: Any, processor: Any, out: Path, mode: str, base: str) -> None:
    """Write the fine-tuned model to `out` atomically: full weights, a LoRA adapter, or the trained projector."""
    with atomic_dir(out) as tmp:
        if mode == "projector":
            save_trainable(model, tmp)
        else:
            model.save_pretrained(tmp)
        if mode == "lora":
            save_buffers(model, tmp)
        processor.save_pretrained(tmp)
        (tmp / META).write_text(json.dumps({"mode": mode, "base": base, "family": "vlm"}, indent=2) + "\n")


def load_vlm_trained(folder: Path, cfg: ModelConfig) -> tuple[Any, Any]:
    """Load what save_vlm wrote, ready for inference (LoRA merged, eval mode, on this process's GPU if any)."""
    if not (folder / META).is_file():
        raise ConfigError(f"{folder}: no trained model here (missing {META}); run `train` first")
    meta = json.loads((folder / META).read_text())
    dtype, attn = torch_dtype(cfg.dtype), attn_implementation(cfg.attn_implementation)
    source = folder if meta["mode"] == "full" else meta["base"]
    require_torchvision(str(source))
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, attn_implementation=attn)
    if meta["mode"] == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, folder).merge_and_unload()
        load_buffers(model, folder)
    elif meta["mode"] == "projector":
        model.load_state_dict(load_file(str(folder / TRAINABLE_FILE)), strict=False)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model.to(local_device()).eval(), processor
