"""Tiny random-init image-text-to-text checkpoints (model + processor) of several families, written offline.

    folder = save_tiny_vlm("idefics3", tmp_path / "idefics3", ["what colour is the cat?", "red"])
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)

Each family uses its real config, processor and image-processor classes at toy sizes (32 px images, ~4-16
image tokens each), a word-level tokenizer trained on the given texts, and, except PaliGemma (prompt + suffix,
no chat template), a short chat template whose assistant turn is the answer followed by the EOS token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForImageTextToText,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    GemmaConfig,
    Idefics3Config,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaProcessor,
    PaliGemmaConfig,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

from competition.tokenizer import train_word_tokenizer

TINY_FAMILIES = ("llava", "idefics3", "paligemma", "gemma3", "qwen2_vl")
NEED_TORCHVISION = ("qwen2_vl",)  # processors with a video half
IMAGE = 32  # image side in pixels, for every family
PATCH = 8  # (32 / 8)^2 = 16 patches per image
POOLED = 4  # image tokens after Idefics3's pixel shuffle (scale 2) or Gemma3's 2x2 average pooling
TEMPLATE_WORDS = ["user", "assistant", "system", "model", ":"]  # words the chat templates emit
VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=IMAGE, patch_size=PATCH
)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
GEMMA_TEXT = dict(TEXT, head_dim=16, query_pre_attn_scalar=16)  # Gemma's default head_dim is 256
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]

CHAT_BODY = """
{%- for m in messages -%}
{%- if m['role'] == 'system' -%}{{ sys_open }}{%- elif m['role'] == 'user' -%}{{ user_open }}
{%- else -%}{{ bot_open }}{%- endif -%}
{%- if m['content'] is string -%}{{ m['content'] }}{%- else -%}{%- for c in m['content'] -%}
{%- if c['type'] == 'image' -%}{{ image }}{%- elif c['type'] == 'text' -%}{{ c['text'] }}{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- if m['role'] == 'assistant' -%}{{ eos_token }}{%- else -%}{{ turn_end }}{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ bot_open }}{%- endif -%}
"""


def chat_template(sys_open: str, user_open: str, bot_open: str, image: str, turn_end: str) -> str:
    """CHAT_BODY with the family's turn markers bound by Jinja `set` statements."""
    markers = dict(sys_open=sys_open, user_open=user_open, bot_open=bot_open, image=image, turn_end=turn_end)
    sets = "".join(f"{{%- set {k} = {json.dumps(v)} -%}}" for k, v in markers.items())
    return sets + CHAT_BODY.strip()


def word_tokenizer(texts: Iterable[str], specials: list[str], **extra: str) -> PreTrainedTokenizerFast:
    """The project's word-level tokenizer over `texts` and the chat templates' words; `extra` names family tokens."""
    return train_word_tokenizer([*TEMPLATE_WORDS, *texts], specials, extra)


def text_ids(tok: Any) -> dict[str, int]:
    """Vocab size and pad/bos/eos ids of a tokenizer, as text-config kwargs."""
    return dict(
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id
    )


def llava(texts: list[str]) -> tuple[LlavaConfig, LlavaProcessor]:
    """LLaVA-1.5 style: CLIP tower, Llama LM, 16 image tokens (patches without CLS)."""
    tok = word_tokenizer(texts, ["<image>"], image_token="<image>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=LlamaConfig(**TEXT, **text_ids(tok)),
        image_token_id=tok.image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(IMAGE // PATCH) ** 2,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, image_mean=MEAN, image_std=STD
    )
    template = chat_template("SYSTEM: ", "USER: ", "ASSISTANT: ", "<image>\n", " ")
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=template,
    )
    return config, processor


def idefics3(texts: list[str]) -> tuple[Idefics3Config, Idefics3Processor]:
    """Idefics3 / SmolVLM style: no image splitting, 16 patches pixel-shuffled to 4 image tokens."""
    grid = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]  # the processor looks up a 6x6 grid
    specials = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", *grid]
    tok = word_tokenizer(texts, specials, image_token="<image>")
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**VISION),
        text_config=LlamaConfig(**TEXT, **text_ids(tok)),
        image_token_id=tok.image_token_id,
        scale_factor=2,
        pad_token_id=tok.pad_token_id,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": IMAGE},
        max_image_size={"longest_edge": IMAGE},
        image_mean=MEAN,
        image_std=STD,
    )
    template = chat_template("System: ", "User:", "\nAssistant: ", "<image>", "<end_of_utterance>")
    processor = Idefics3Processor(image_processor, tok, image_seq_len=POOLED, chat_template=template)
    return config, processor


def paligemma(texts: list[str]) -> tuple[PaliGemmaConfig, PaliGemmaProcessor]:
    """PaliGemma style: SigLIP tower, Gemma LM, 16 image tokens, prompt + suffix (no chat template)."""
    tok = word_tokenizer(texts, ["<image>"], image_token="<image>")
    image_processor = SiglipImageProcessorPil(
        size={"height": IMAGE, "width": IMAGE}, image_mean=MEAN, image_std=STD, image_seq_length=(IMAGE // PATCH) ** 2
    )
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)  # adds 1152 <locNNNN>/<segNNN>
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(**VISION, vision_use_head=False),
        text_config=GemmaConfig(**GEMMA_TEXT, **text_ids(tok)),
        image_token_id=tok.image_token_id,
        projection_dim=TEXT["hidden_size"],
        hidden_size=TEXT["hidden_size"],
        vocab_size=len(tok),
    )
    return config, processor


def gemma3(texts: list[str]) -> tuple[Gemma3Config, Gemma3Processor]:
    """Gemma3 style: SigLIP tower, Gemma3 LM, 16 patches average-pooled to 4 image tokens."""
    image_tokens = dict(boi_token="<start_of_image>", eoi_token="<end_of_image>", image_token="<image_soft_token>")
    tok = word_tokenizer(texts, [*image_tokens.values(), "<start_of_turn>", "<end_of_turn>"], **image_tokens)
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(**VISION, vision_use_head=False),
        text_config=Gemma3TextConfig(**GEMMA_TEXT, **text_ids(tok)),
        mm_tokens_per_image=POOLED,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, image_mean=MEAN, image_std=STD)
    template = chat_template(
        "<start_of_turn>system\n",
        "<start_of_turn>user\n",
        "<start_of_turn>model\n",
        "<start_of_image>",
        "<end_of_turn>\n",
    )
    processor = Gemma3Processor(image_processor, tok, chat_template=template, image_seq_length=POOLED)
    return config, processor


def qwen2_vl(texts: list[str]) -> tuple[Any, Any]:
    """Qwen2-VL style: dynamic resolution (14 px patches, 2x2 merged: one token per 28 x 28 pixels), M-RoPE.
    Its processor has a video half that needs torchvision."""
    from transformers import Qwen2VLConfig, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    marks = dict(vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>",
                 image_token="<|image_pad|>", video_token="<|video_pad|>")  # fmt: skip
    tok = word_tokenizer(texts, [*marks.values(), "<|im_start|>", "<|im_end|>"], **marks)
    ids = {f"{k.removesuffix('_token')}_token_id": tok.convert_tokens_to_ids(v) for k, v in marks.items()}
    config = Qwen2VLConfig(
        text_config=dict(TEXT, num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                         **text_ids(tok)),  # mrope sections add up to head_dim / 2 = 8
        vision_config=dict(depth=1, embed_dim=32, hidden_size=TEXT["hidden_size"], num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        **ids,
    )  # fmt: skip
    pixels = 56 * 56  # 4 image tokens for a square picture
    image_processor = Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels, image_mean=MEAN, image_std=STD)
    template = chat_template("<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n",
                             "<|vision_start|><|image_pad|><|vision_end|>", "<|im_end|>\n")  # fmt: skip
    processor = Qwen2VLProcessor(image_processor, tok, Qwen2VLVideoProcessor(), chat_template=template)
    return config, processor


BUILDERS: dict[str, Callable[[list[str]], tuple[Any, Any]]] = {
    "qwen2_vl": qwen2_vl,
    "llava": llava,
    "idefics3": idefics3,
    "paligemma": paligemma,
    "gemma3": gemma3,
}


def save_tiny_vlm(family: str, folder: Path, texts: list[str], seed: int = 0) -> Path:
    """family in TINY_FAMILIES; writes model + processor to folder; returns folder."""
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; expected one of {TINY_FAMILIES}")
    config, processor = BUILDERS[family](list(texts))
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    tok = processor.tokenizer
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
