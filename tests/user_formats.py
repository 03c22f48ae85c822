"""Tiny random-init model folders in the on-disk formats users download, built offline in seconds.

    from tests.user_formats import build_user_formats
    folders = build_user_formats(tmp_path, ["What color is the circle?", "red"])

Each kind mirrors a real checkpoint's layout, written by transformers' own classes:

- llava_hf: as `llava-hf/llava-1.5-7b-hf` (LlavaForConditionalGeneration + LlavaProcessor with a Llama
  BPE tokenizer holding `<image>` and `<pad>`, llava-1.5-hf's chat template).
- clip_vision: a CLIPVisionModel + CLIPImageProcessor (a vision tower saved on its own).
- clip_model: a whole CLIPModel + CLIPProcessor, with openai's legacy preprocessor_config.json
  (as `openai/clip-vit-large-patch14` ships).
- llama: a Vicuna-style LlamaForCausalLM with a fast tokenizer (tokenizer.json), no pad token.
- llama_sentencepiece: the same LM kind whose tokenizer is only a SentencePiece `tokenizer.model`
  + tokenizer_config.json / special_tokens_map.json (as `lmsys/vicuna-7b-v1.3` ships); loading it
  needs `sentencepiece` and `protobuf`.

Sizes are tiny (vision hidden 32, image 32 px, patch 8; Llama hidden 64), weights are seeded, and
every word of `texts` (and of the prompt templates) is one token or a few pieces of the vocabulary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from competition.images import CLIP_MEAN, CLIP_STD

KINDS = ("llava_hf", "clip_vision", "clip_model", "llama", "llama_sentencepiece")
IMAGE_TOKEN = "<image>"
SEED = 0

# The chat template of llava-hf/llava-1.5-7b-hf (its chat_template.json), verbatim: quoted as
# "llava-1.5, llava-v1.6-vicuna (chat_template.json)" in openvinotoolkit/openvino.genai
# src/cpp/src/tokenizer.cpp (chat_template_fallback_map), identical in other copies.
LLAVA_15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}"
    "{% endif %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}"
    "{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}"
    "{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}"
    "{{ content['text'] + ' '}}"
    "{% endgeneration %}"
    "{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ 'ASSISTANT:' }}"
    "{% endif %}"
)

# Tiny sizes: vision tower (all kinds) and Llama language model.
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
    projection_dim=16,
    attention_dropout=0.0,
)
LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
LLAMA_SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 as in Llama / Vicuna
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]  # Llama's byte-fallback pieces, ids 3..258


def build_user_formats(root: Path, texts: list[str], vocab_size: int = 4000) -> dict[str, Path]:
    """Tiny random-init folders in users' formats; returns {kind: folder}.

    `vocab_size` caps the trained Llama vocabularies (3 specials + 256 byte pieces included); the
    LM's embedding rows always equal the tokenizer's length.
    """
    root = Path(root)
    corpus = training_corpus(texts)
    return {
        "llava_hf": build_llava_hf(root / "llava_hf", corpus, vocab_size),
        "clip_vision": build_clip_vision(root / "clip_vision"),
        "clip_model": build_clip_model(root / "clip_model"),
        "llama": build_llama(root / "llama", corpus, vocab_size),
        "llama_sentencepiece": build_llama_sentencepiece(root / "llama_sentencepiece", corpus, vocab_size),
    }


def training_corpus(texts: Iterable[str]) -> list[str]:
    """The given texts plus every fixed word prompts can emit (templates, system texts, chat markers)."""
    from competition.prompts import vocabulary_text

    fixed = [t.replace(IMAGE_TOKEN, " ") for t in vocabulary_text()]
    fixed.append("USER: ASSISTANT: Answer the question using a single word or phrase.")
    # Newlines stay out of the pieces: Llama encodes them with its byte fallback (<0x0A>).
    lines = (" ".join(t.split()) for t in (*fixed, *texts))
    return [t for t in lines if t]


def image_processor() -> CLIPImageProcessor:
    """CLIP's resize-shortest-edge + centre crop to the tiny square size, CLIP normalisation."""
    side = VISION["image_size"]
    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": side},
        resample=3,
        do_center_crop=True,
        crop_size={"height": side, "width": side},
        do_rescale=True,
        do_normalize=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )


def llama_bpe(corpus: list[str], vocab_size: int) -> LlamaTokenizer:
    """A Llama tokenizer (Metaspace BPE with byte fallback) trained on `corpus`: <unk>, <s>, </s>, bytes."""
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    # Pieces never span a word boundary, punctuation or digits stand alone (as Llama's SentencePiece
    # model splits by script and digit); the tokenizer then runs with Llama's own Metaspace.
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation("isolated"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    n_fixed = len(LLAMA_SPECIALS) + len(BYTE_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - n_fixed, 1), min_frequency=1, special_tokens=[], show_progress=False
    )
    trainer_tok.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    pieces = sorted(model["vocab"], key=model["vocab"].get)
    vocab = {t: i for i, t in enumerate([*LLAMA_SPECIALS, *BYTE_TOKENS])}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        add_bos_token=True,
        add_eos_token=False,
        legacy=False,
        model_max_length=2048,
        padding_side="right",
    )


def llama_config(tokenizer_len: int, pad_token_id: int | None) -> LlamaConfig:
    return LlamaConfig(vocab_size=tokenizer_len, bos_token_id=1, eos_token_id=2, pad_token_id=pad_token_id, **LLAMA)


def save_lm(folder: Path, tokenizer_len: int) -> None:
    """A seeded Vicuna-style LlamaForCausalLM (config pad_token_id 0 = <unk>, as Vicuna's config.json)."""
    torch.manual_seed(SEED)
    lm = LlamaForCausalLM(llama_config(tokenizer_len, pad_token_id=0))
    lm.generation_config.pad_token_id = 0
    lm.save_pretrained(folder)


def build_llava_hf(folder: Path, corpus: list[str], vocab_size: int) -> Path:
    """As llava-hf/llava-1.5-7b-hf: LLaVA weights + LlavaProcessor (<image> then <pad> appended)."""
    tok = llama_bpe(corpus, vocab_size)
    tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    tok.add_special_tokens({"pad_token": AddedToken("<pad>", special=True, normalized=False)})
    tok.padding_side = "left"
    strategy = "default"
    n_image = (VISION["image_size"] // VISION["patch_size"]) ** 2
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=llama_config(len(tok), pad_token_id=tok.pad_token_id),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy=strategy,
        image_seq_length=n_image,
        tie_word_embeddings=False,
    )
    config.pad_token_id = tok.pad_token_id
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(folder)
    processor = LlavaProcessor(
        image_processor=image_processor(),
        tokenizer=tok,
        patch_size=VISION["patch_size"],
        vision_feature_select_strategy=strategy,
        chat_template=LLAVA_15_CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(folder)
    hub_processor_layout(folder, tok)
    return folder


def hub_processor_layout(folder: Path, tok: LlamaTokenizer) -> None:
    """Rewrite transformers 5's processor files into the layout llava-hf/llava-1.5-7b-hf has on the Hub.

    There: preprocessor_config.json (the image processor), a flat processor_config.json,
    chat_template.json, and a tokenizer_config.json with added_tokens_decoder + special_tokens_map.json.
    """
    nested = json.loads((folder / "processor_config.json").read_text())
    image = nested.pop("image_processor")
    write_json(folder / "preprocessor_config.json", {**image, "processor_class": "LlavaProcessor"})
    write_json(folder / "processor_config.json", nested)
    (folder / "chat_template.jinja").unlink()
    write_json(folder / "chat_template.json", {"chat_template": LLAVA_15_CHAT_TEMPLATE})
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("backend", None)
    flags = {"content", "lstrip", "normalized", "rstrip", "single_word", "special"}
    decoder = {
        str(i): {k: v for k, v in sorted(t.__getstate__().items()) if k in flags}
        for i, t in sorted(tok.added_tokens_decoder.items())
    }
    config = {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder, "legacy": False,
              **config}  # fmt: skip
    write_json(folder / "tokenizer_config.json", dict(sorted(config.items())))
    special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    write_json(folder / "special_tokens_map.json", special)


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def build_clip_vision(folder: Path) -> Path:
    """A CLIPVisionModel saved alone, with its image processor (preprocessor_config.json)."""
    torch.manual_seed(SEED)
    CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(folder)
    image_processor().save_pretrained(folder)
    return folder


def clip_tokenizer() -> CLIPTokenizer:
    """CLIP's byte-level BPE with the bare byte alphabet (no merges): enough for a text tower to run."""
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate([*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"])}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_clip_model(folder: Path) -> Path:
    """As openai/clip-vit-large-patch14: a whole CLIPModel + CLIPProcessor; legacy preprocessor_config.json."""
    tok = clip_tokenizer()
    text = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=VISION["projection_dim"],
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=1,
    )
    config = CLIPConfig(
        text_config=text.to_dict(),
        vision_config=CLIPVisionConfig(**VISION).to_dict(),
        projection_dim=VISION["projection_dim"],
    )
    torch.manual_seed(SEED)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor(), tokenizer=tok).save_pretrained(folder)
    side = VISION["image_size"]
    legacy = {  # the file openai/clip-vit-large-patch14 ships (old feature-extractor keys, int sizes)
        "crop_size": side,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "resample": 3,
        "size": side,
    }
    write_json(folder / "preprocessor_config.json", legacy)
    (folder / "processor_config.json").unlink()  # openai's CLIP folders have none
    return folder


def build_llama(folder: Path, corpus: list[str], vocab_size: int) -> Path:
    """A Vicuna-style LM folder with a fast Llama tokenizer (tokenizer.json): bos/eos/unk, no pad."""
    tok = llama_bpe(corpus, vocab_size)
    assert tok.pad_token is None
    save_lm(folder, len(tok))
    tok.save_pretrained(folder)
    return folder


def sentencepiece_model(corpus: list[str], vocab_size: int) -> bytes:
    """A Llama-like SentencePiece BPE (unk/bos/eos = 0/1/2, byte fallback, no pad) trained on `corpus`."""
    import io

    import sentencepiece as spm

    words = {w for t in corpus for w in t.split()}
    chars = {c for t in corpus for c in t}
    # BPE needs vocab_size <= what the corpus can yield: specials + bytes + chars + a merge per word piece.
    cap = 3 + 256 + len(chars) + sum(max(len(w) - 1, 0) for w in words)
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=out,
        model_type="bpe",
        vocab_size=max(3 + 256 + len(chars) + 1, min(vocab_size, cap)),
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        max_sentencepiece_length=32,
        minloglevel=2,
    )
    return out.getvalue()


def build_llama_sentencepiece(folder: Path, corpus: list[str], vocab_size: int) -> Path:
    """As lmsys/vicuna-7b-v1.3: weights + tokenizer.model + tokenizer_config.json + special_tokens_map.json only."""
    import sentencepiece as spm

    blob = sentencepiece_model(corpus, vocab_size)
    n_pieces = spm.SentencePieceProcessor(model_proto=blob).get_piece_size()
    save_lm(folder, n_pieces)
    (folder / "tokenizer.model").write_bytes(blob)

    def added(content: str) -> dict:
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}  # fmt: skip

    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": added("<s>"),
        "clean_up_tokenization_spaces": False,
        "eos_token": added("</s>"),
        "model_max_length": 2048,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": added("<unk>"),
    }
    write_json(folder / "tokenizer_config.json", config)
    special = {k: {key: v for key, v in added(t).items() if key != "__type"}
               for k, t in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}  # fmt: skip
    write_json(folder / "special_tokens_map.json", special)
    return folder


def words_of(texts: Iterable[str]) -> set[str]:
    """The whitespace/punctuation-separated words of `texts` (for vocabulary checks)."""
    return {w for t in texts for w in re.findall(r"[A-Za-z0-9]+", t)}
