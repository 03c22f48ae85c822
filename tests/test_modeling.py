"""Model building and loading: tiny, pretrained folder, from_parts with an original mm_projector.bin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from competition.config import ModelConfig, load_config
from competition.modeling import (
    ImageTransform,
    build_base,
    build_from_parts,
    expand_to_square,
    train_word_tokenizer,
)

TEXTS = ["What color is the circle?", "red", "blue", "How many objects are there?", "3"]


def tiny_cfg(**kw: object) -> ModelConfig:
    return ModelConfig(source="tiny", vision_feature_layer=-1, **kw)


def logits(model: torch.nn.Module, processor: object) -> torch.Tensor:
    """Next-token logits of one fixed image + prompt."""
    from competition.dataset import encode_prompts, expand_image_tokens
    from competition.modeling import image_token_count

    ids = encode_prompts(processor, "short_answer", ["What color is the circle?"], 64)[0]
    ids = expand_image_tokens(ids, model.config.image_token_id, image_token_count(model.config))
    px = ImageTransform(processor, "pad")([Image.new("RGB", (80, 64), (200, 30, 30))])
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), pixel_values=px).logits[0, -1]


def test_pad_keeps_shapes_and_uses_mean_colour() -> None:
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    sq = expand_to_square(im, (10, 20, 30))
    assert sq.size == (40, 40)
    assert sq.getpixel((0, 0)) == (10, 20, 30) and sq.getpixel((20, 20)) == (255, 0, 0)


def test_tiny_builds_offline_and_round_trips(tmp_path: Path) -> None:
    model, processor = build_base(tiny_cfg(), TEXTS, seed=0)
    assert processor.tokenizer.convert_tokens_to_ids("circle") != processor.tokenizer.unk_token_id
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    loaded, loaded_proc = build_base(ModelConfig(source="pretrained", name_or_path=str(tmp_path / "ckpt")), [], 0)
    assert torch.allclose(logits(model, processor), logits(loaded, loaded_proc))
    assert loaded_proc.tokenizer.padding_side == "left"


@pytest.mark.parametrize("projector_type", ["mlp2x_gelu", "linear"])
def test_from_parts_imports_original_llava_projector(tmp_path: Path, projector_type: str) -> None:
    tok = train_word_tokenizer(TEXTS)
    vision = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    )
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            pad_token_id=tok.pad_token_id,
        )
    )
    vision.save_pretrained(tmp_path / "vision")
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    if projector_type == "linear":
        state = {"model.mm_projector.weight": torch.randn(48, 32), "model.mm_projector.bias": torch.randn(48)}
    else:
        state = {
            "model.mm_projector.0.weight": torch.randn(48, 32),
            "model.mm_projector.0.bias": torch.randn(48),
            "model.mm_projector.2.weight": torch.randn(48, 48),
            "model.mm_projector.2.bias": torch.randn(48),
        }
    torch.save(state, tmp_path / "mm_projector.bin")
    cfg = ModelConfig(
        source="from_parts",
        vision_tower=str(tmp_path / "vision"),
        language_model=str(tmp_path / "lm"),
        projector=str(tmp_path / "mm_projector.bin"),
        projector_type=projector_type,
    )
    model, processor = build_from_parts(cfg)
    proj = model.model.multi_modal_projector
    first = state.get("model.mm_projector.weight", state.get("model.mm_projector.0.weight"))
    assert torch.equal(proj.linear_1.weight, first)
    feats = torch.randn(3, 32)
    expected = feats @ first.T + state.get("model.mm_projector.bias", state.get("model.mm_projector.0.bias"))
    if projector_type == "linear":
        assert torch.allclose(proj(feats), expected, atol=1e-5)
    assert torch.equal(model.model.language_model.embed_tokens.weight[:10], lm.model.embed_tokens.weight[:10])
    assert model.config.vision_feature_layer == -2
    assert torch.isfinite(logits(model, processor)).all()


def test_seed_recipe_dry_run_plans_without_weights() -> None:
    from competition.train import dry_run_plan

    cfg = load_config("configs/seed_llava_vicuna7b.yaml", ["data.root=/nonexistent"])
    text = "\n".join(dry_run_plan(cfg, 0))
    assert "effective 256" in text
    assert "trainable parameters 4,198,400 of" in text  # the linear projector 1024 -> 4096
    assert "287,617 examples; 1,124 optimizer steps per epoch" in text
