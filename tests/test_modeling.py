"""Model building and loading: tiny, pretrained folder, from_parts with an original mm_projector.bin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from competition.config import TrainConfig, load_config
from competition.errors import ConfigError
from competition.images import ImageTransform, expand_to_square
from competition.model_config import ModelConfig
from competition.modeling import (
    apply_mode,
    build_base,
    build_from_parts,
    image_token_count,
)
from competition.tokenizer import train_word_tokenizer

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


def test_a_conv_stem_gives_one_token_per_cell_and_refuses_to_drop_a_cls_it_lacks() -> None:
    model, processor = build_base(tiny_cfg(**CONV_STEM), TEXTS, seed=0)
    assert image_token_count(model.config) == 16 == model.config.image_seq_length  # (32 px / 2^3)^2
    assert processor.num_additional_image_tokens == 0
    with pytest.raises(ConfigError, match="vision_feature_select_strategy: full"):
        build_base(tiny_cfg(**{**CONV_STEM, "vision_feature_select_strategy": "default"}), TEXTS, seed=0)


@pytest.mark.parametrize("kernel,sees_beyond", [(2, False), (3, True)])
def test_a_patch_stem_cell_sees_its_own_patch_only(kernel: int, sees_beyond: bool) -> None:
    from competition.backbones import ConvStemConfig, ConvStemModel

    stem = ConvStemModel(ConvStemConfig(hidden_sizes=[4, 4], strides=[2, 2], kernel_size=kernel)).eval()
    x = torch.randn(1, 3, 8, 8)
    y = x.clone()
    y[..., :4, :] = torch.randn(1, 3, 4, 8)  # another picture in the first row of 4 px cells
    second_row = stem(pixel_values=x).last_hidden_state[..., 1, :], stem(pixel_values=y).last_hidden_state[..., 1, :]
    assert stem(pixel_values=x).last_hidden_state.shape[-2:] == (2, 2)
    assert torch.allclose(*second_row) is not sees_beyond


@pytest.mark.parametrize("coords", [False, True])
def test_coord_channels_tell_a_patch_stems_identical_cells_apart(coords: bool, tmp_path: Path) -> None:
    from competition.backbones import ConvStemConfig, ConvStemModel

    stem = ConvStemModel(ConvStemConfig(hidden_sizes=[4, 4], strides=[2, 2], kernel_size=2, coord_channels=coords)).eval()
    x = torch.randn(1, 3, 4, 4).repeat(1, 1, 2, 2)  # the same 4 px picture in each of the 2 x 2 cells
    cells = stem(pixel_values=x).last_hidden_state.flatten(2)[0].T
    assert torch.allclose(cells[0], cells[3]) is not coords
    stem.save_pretrained(tmp_path)
    again = ConvStemModel.from_pretrained(tmp_path).eval()
    assert again.config.coord_channels is coords
    torch.testing.assert_close(again(pixel_values=x).last_hidden_state, stem(pixel_values=x).last_hidden_state)

@pytest.mark.parametrize("downsample,same", [("stride", False), ("max", True)])
def test_a_max_pooled_stem_answers_the_same_wherever_a_dot_lies_in_its_window(downsample: str, same: bool) -> None:
    from competition.backbones import ConvStemConfig, ConvStemModel

    stem = ConvStemModel(ConvStemConfig(hidden_sizes=[4], strides=[4], kernel_size=1, downsample=downsample)).eval()
    with torch.no_grad():
        stem.layers[0][0].weight.fill_(1.0)  # a 1x1 conv summing the colours: a bright dot is the strongest response
    left, right = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    left[..., 0, 0], right[..., 2, 3] = 1.0, 1.0  # one dot, at two places of the one 4 px cell
    a, b = stem(pixel_values=left).last_hidden_state, stem(pixel_values=right).last_hidden_state
    assert a.shape[-2:] == (1, 1)
    assert torch.equal(a, b) is same


def test_a_stem_refuses_an_unknown_downsampling() -> None:
    from competition.backbones import ConvStemConfig

    with pytest.raises(ValueError, match="downsample='avg': expected one of stride, max"):
        ConvStemConfig(downsample="avg")


def test_pad_keeps_shapes_and_uses_mean_colour() -> None:
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    sq = expand_to_square(im, (10, 20, 30))
    assert sq.size == (40, 40)
    assert sq.getpixel((0, 0)) == (10, 20, 30) and sq.getpixel((20, 20)) == (255, 0, 0)


CONV_STEM = {"tiny": {"vision": "conv_stem", "image_size": 32, "vision_layers": 3, "vision_hidden": 32},
             "vision_feature_select_strategy": "full"}  # fmt: skip


@pytest.mark.parametrize("extra", [{}, CONV_STEM], ids=["clip", "conv_stem"])
def test_tiny_builds_offline_and_round_trips(tmp_path: Path, extra: dict) -> None:
    model, processor = build_base(tiny_cfg(**extra), TEXTS, seed=0)
    assert processor.tokenizer.convert_tokens_to_ids("circle") != processor.tokenizer.unk_token_id
    model.train()(pixel_values=torch.rand(4, 3, 32 if extra else 64, 32 if extra else 64) * 4,  # BatchNorm statistics move
                  input_ids=torch.tensor([[1] + [model.config.image_token_id] * image_token_count(model.config)] * 4))  # fmt: skip
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    loaded, loaded_proc = build_base(ModelConfig(source="pretrained", name_or_path=str(tmp_path / "ckpt")), [], 0)
    assert torch.allclose(logits(model, processor), logits(loaded, loaded_proc))
    assert loaded_proc.tokenizer.padding_side == "left"


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny CLIP vision tower (vision/) and a Llama LM with its tokenizer (lm/)."""
    root = tmp_path_factory.mktemp("parts")
    tok = train_word_tokenizer(TEXTS)
    torch.manual_seed(0)
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
    vision.save_pretrained(root / "vision")
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    return root


def parts_cfg(parts: Path, **kw: object) -> ModelConfig:
    return ModelConfig(source="from_parts", vision_tower=str(parts / "vision"), language_model=str(parts / "lm"), **kw)


def test_linear_projector_is_one_seeded_linear_map_in_every_mode(parts: Path) -> None:
    cfg = parts_cfg(parts, projector_type="linear")
    model, _ = build_base(cfg, [], seed=3)
    again, _ = build_base(cfg, [], seed=3)
    proj = model.model.multi_modal_projector
    assert [n for n, _ in proj.named_parameters()] == ["linear_1.weight", "linear_1.bias"]
    assert all(torch.equal(p, q) for p, q in zip(proj.parameters(), again.model.multi_modal_projector.parameters(), strict=True))
    feats = torch.randn(3, 32)
    assert torch.allclose(proj(feats), feats @ proj.linear_1.weight.T + proj.linear_1.bias)
    for mode in ("projector", "lora"):
        wrapped = apply_mode(build_base(cfg, [], seed=3)[0], TrainConfig(mode=mode, lora={"r": 2}))
        trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad and "multi_modal_projector" in n]
        assert len(trainable) == 2 and all("linear_1" in n for n in trainable), trainable


@pytest.mark.parametrize("projector_type", ["mlp2x_gelu", "linear"])
def test_from_parts_imports_original_llava_projector(parts: Path, tmp_path: Path, projector_type: str) -> None:
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
    cfg = parts_cfg(parts, projector=str(tmp_path / "mm_projector.bin"), projector_type=projector_type)
    model, processor = build_from_parts(cfg)
    proj = model.model.multi_modal_projector
    first = state.get("model.mm_projector.weight", state.get("model.mm_projector.0.weight"))
    assert torch.equal(proj.linear_1.weight, first)
    feats = torch.randn(3, 32)
    expected = feats @ first.T + state.get("model.mm_projector.bias", state.get("model.mm_projector.0.bias"))
    if projector_type == "linear":
        assert torch.allclose(proj(feats), expected, atol=1e-5)
    lm = LlamaForCausalLM.from_pretrained(parts / "lm")
    assert torch.equal(model.model.language_model.embed_tokens.weight[:10], lm.model.embed_tokens.weight[:10])
    assert model.config.vision_feature_layer == -2
    assert torch.isfinite(logits(model, processor)).all()


def test_seed_recipe_dry_run_plans_without_weights() -> None:
    from competition.plan import dry_run_plan

    cfg = load_config("configs/seed_llava_vicuna7b.yaml", ["data.root=/nonexistent"])
    text = "\n".join(dry_run_plan(cfg, 0))
    assert "effective 256" in text
    assert "trainable parameters 4,198,400 of" in text  # the linear projector 1024 -> 4096
    assert "273,236 examples; 1,068 optimizer steps per epoch" in text
    assert "checkpoints: every 200 steps of 1,068" in text


def test_seed_recipe_trains_and_predicts_with_the_seeds_conversation() -> None:
    from competition.plan import dry_run_plan
    from competition.prompts import render

    cfg = load_config("configs/seed_llava_vicuna7b.yaml")
    assert cfg.train.prompt == "vicuna_v1" and cfg.predict.prompts == ["vicuna_v1"]
    assert render("vicuna_v1", "What is it?") == (  # LLaVA's conv_vicuna_v1 (`--version v1`), sep_style TWO
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\nWhat is it? ASSISTANT:"
    )
    assert render("llava_v1", "What is it?").startswith("A chat between a curious human")
    seed_sets = ["data.root=/nonexistent", "train.eval_steps=2400"]
    plan = dry_run_plan(load_config("configs/seed_llava_vicuna7b.yaml", seed_sets), 0)
    assert any(line.startswith("checkpoints: NONE (train.eval_steps=2400 > 1,068 steps)") for line in plan), plan
    plan = dry_run_plan(load_config("configs/seed_llava_vicuna7b.yaml", [*seed_sets, "train.eval_steps=0"]), 0)
    assert any(line.startswith("checkpoints: every 200 steps of 1,124") for line in plan), plan


def test_a_projector_file_of_the_other_type_is_one_clear_error(parts: Path, tmp_path: Path) -> None:
    from competition.errors import ConfigError

    torch.save({"model.mm_projector.weight": torch.randn(48, 32), "model.mm_projector.bias": torch.randn(48)},
               tmp_path / "mm_projector.bin")  # fmt: skip
    cfg = parts_cfg(parts, projector=str(tmp_path / "mm_projector.bin"), projector_type="mlp2x_gelu")
    with pytest.raises(ConfigError, match=r"mm_projector.bin: projector keys .*weight.* model.projector_type=mlp2x_gelu, which expects"):
        build_base(cfg, [], 0)


def test_each_process_uses_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from competition.modeling import local_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device() == torch.device("cuda", 3)
    monkeypatch.delenv("LOCAL_RANK")
    assert local_device() == torch.device("cuda", 0)
