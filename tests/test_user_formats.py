"""The tiny user-format folders load with the classes users use, and the project builds from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionModel,
    LlavaForConditionalGeneration,
)

from competition.model_config import ModelConfig
from tests.user_formats import build_user_formats, words_of

TEXTS = ["What color is the circle?", "red", "blue", "How many objects are there?", "3", "Is it left of the cube?"]
QUESTION = "What color is the circle?"
IMAGE = Image.new("RGB", (48, 40), (200, 30, 30))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_user_formats(tmp_path_factory.mktemp("user_formats"), TEXTS)


def test_layouts_and_determinism(folders: dict[str, Path], tmp_path: Path) -> None:
    files = {k: sorted(p.name for p in f.iterdir()) for k, f in folders.items()}
    assert {"chat_template.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json",
            "special_tokens_map.json", "model.safetensors"} <= set(files["llava_hf"])  # fmt: skip
    assert "tokenizer.json" not in files["llama_sentencepiece"]
    assert {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"} <= set(files["llama_sentencepiece"])
    again = build_user_formats(tmp_path, TEXTS)
    for kind, folder in folders.items():
        assert (folder / "model.safetensors").read_bytes() == (again[kind] / "model.safetensors").read_bytes(), kind


def test_llava_hf_loads_as_users_load_it(folders: dict[str, Path]) -> None:
    model = LlavaForConditionalGeneration.from_pretrained(folders["llava_hf"])
    processor = AutoProcessor.from_pretrained(folders["llava_hf"])
    tok = processor.tokenizer
    assert len(tok) == model.config.text_config.vocab_size
    assert tok.convert_tokens_to_ids("<image>") == model.config.image_token_id
    assert tok.pad_token == "<pad>" and model.config.vision_feature_layer == -2
    message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(message, add_generation_prompt=True)
    assert prompt == f"USER: <image>\n{QUESTION} ASSISTANT:"
    inputs = processor(images=[IMAGE], text=[prompt], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == 16 == model.config.image_seq_length
    assert inputs["pixel_values"].shape[-2:] == (32, 32)
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


@pytest.mark.parametrize("kind", ["clip_vision", "clip_model"])
def test_clip_folders_load_as_vision_towers(folders: dict[str, Path], kind: str) -> None:
    tower = CLIPVisionModel.from_pretrained(folders[kind])
    assert tower.config.hidden_size == 32 and tower.config.image_size == 32
    image_processor = CLIPImageProcessor.from_pretrained(folders[kind])
    assert image_processor.crop_size == {"height": 32, "width": 32}
    px = image_processor(images=[IMAGE], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        assert tower(pixel_values=px, output_hidden_states=True).hidden_states[-2].shape == (1, 17, 32)


@pytest.mark.parametrize("kind", ["llama", "llama_sentencepiece"])
def test_llama_folders_load_without_pad(folders: dict[str, Path], kind: str) -> None:
    lm = AutoModelForCausalLM.from_pretrained(folders[kind])
    tok = AutoTokenizer.from_pretrained(folders[kind])
    assert tok.pad_token is None and (tok.bos_token, tok.eos_token, tok.unk_token) == ("<s>", "</s>", "<unk>")
    assert len(tok) == lm.config.vocab_size
    ids = tok(" ".join(TEXTS))["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    for word in words_of(TEXTS):
        pieces = tok.tokenize(word)
        assert len(pieces) == 1 if word.isalpha() else tok.unk_token not in pieces, (word, pieces)


@pytest.mark.parametrize("vision,language", [("clip_vision", "llama"), ("clip_model", "llama_sentencepiece")])
def test_project_builds_from_parts(folders: dict[str, Path], vision: str, language: str) -> None:
    from competition.dataset import encode_prompts, expand_image_tokens
    from competition.images import ImageTransform
    from competition.modeling import build_base, image_token_count

    cfg = ModelConfig(
        source="from_parts",
        vision_tower=str(folders[vision]),
        language_model=str(folders[language]),
        projector_type="linear",
        vision_feature_layer=-2,
        image_aspect_ratio="crop",
    )
    model, processor = build_base(cfg, [], 0)
    ids = encode_prompts(processor, "vicuna_v1", [QUESTION], 64)[0]
    assert processor.tokenizer.unk_token_id not in ids[1:]
    ids = expand_image_tokens(ids, model.config.image_token_id, image_token_count(model.config))
    px = ImageTransform(processor, "crop")([IMAGE])
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([ids]), pixel_values=px).logits).all()


def test_project_loads_llava_hf(folders: dict[str, Path]) -> None:
    from competition.dataset import encode_prompts, expand_image_tokens
    from competition.images import ImageTransform
    from competition.modeling import build_base, image_token_count
    from competition.prompts import render

    model, processor = build_base(ModelConfig(source="pretrained", name_or_path=str(folders["llava_hf"])), [], 0)
    assert render("short_answer", QUESTION, processor).startswith(f"USER: <image>\n{QUESTION}")
    for prompt in ("short_answer", "vicuna_v1"):
        ids = encode_prompts(processor, prompt, [QUESTION], 64)[0]
        ids = expand_image_tokens(ids, model.config.image_token_id, image_token_count(model.config))
        px = ImageTransform(processor, "pad")([IMAGE])
        with torch.no_grad():
            assert torch.isfinite(model(input_ids=torch.tensor([ids]), pixel_values=px).logits).all()


def test_dry_run_loads_the_tokenizer_it_will_train_with(folders: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from competition.config import load_config
    from competition.errors import ConfigError
    from competition.plan import dry_run_plan

    sets = ["data.root=/nonexistent", f"model.vision_tower={folders['clip_model']}"]
    lm = f"model.language_model={folders['llama_sentencepiece']}"
    plan = dry_run_plan(load_config("configs/seed_llava_vicuna7b.yaml", [*sets, lm]), 0)
    assert any(line.startswith("tokenizer: LlamaTokenizer") and "no pad token" in line for line in plan), plan
    broken = tmp_path / "broken"
    shutil.copytree(folders["llama_sentencepiece"], broken)
    (broken / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(ConfigError, match="tokenizer does not load"):
        dry_run_plan(load_config("configs/seed_llava_vicuna7b.yaml", [*sets, f"model.language_model={broken}"]), 0)
