"""model.family=classifier: it learns, saves and reloads to the same answers, and runs the same predict / cv /
tune / ensemble flow as LLaVA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from competition.cli import app
from competition.config import DecodingConfig, load_config
from competition.families import family_for, fold_engine
from competition.pipeline import stage_inputs
from competition.predictions import read_split
from competition.train import train_fold

SMALL = ["folds.k=3", "train.per_device_batch_size=16", "train.max_steps=60", "train.eval_steps=20",
         "train.eval_split=val", "train.eval_questions=40", "train.logging_steps=10", "model.classifier.hidden=64"]  # fmt: skip


def classifier_run(demo_root: Path, work: Path, *sets: str) -> tuple:
    cfg = load_config("configs/demo_classifier.yaml", [f"data.root={demo_root}", f"workdir={work}", *SMALL, *sets])
    return (cfg, *stage_inputs(cfg))


@pytest.mark.train(minutes=0.2)
@pytest.mark.parametrize("settings", ["loss=ce", "loss=bce", "fusion_layers=0", "fusion_layers=0 glimpses=2",
                                      "fusion_layers=0 glimpses=2 glimpse_fit=false", "answer_weights=balanced"])
def test_the_classifier_learns_and_reloads_to_the_same_answers(demo_root: Path, tmp_path: Path, settings: str) -> None:
    cfg, comp, folds = classifier_run(demo_root, tmp_path, *(f"model.classifier.{s}" for s in settings.split()))
    metrics, model = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    log = [json.loads(x) for x in (cfg.fold_dir(0) / "train_log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in log if "loss" in x]
    assert losses[-1] < 0.8 * losses[0], losses
    assert metrics["best_accuracy"] is not None and metrics["best_step"] in (20, 40, 60)
    model.eval()
    loaded, processor = family_for(cfg).load(cfg.fold_dir(0) / "model")
    engine = fold_engine(cfg, comp, folds, 0, "train", loaded=(loaded, processor))
    rows = folds[folds["fold"] == 0].merge(comp.train, on=["id", "image_id"]).head(24)
    questions, images = rows["question"].tolist(), rows["image_id"].tolist()
    batched = [a for b in engine.answer("short_answer", DecodingConfig(), questions, images) for a in b]
    engine.batch_size = 1
    single = [a for b in engine.answer("short_answer", DecodingConfig(), questions, images) for a in b]
    assert [a.text for a in batched] == [a.text for a in single]
    assert [a.logprob for a in batched] == pytest.approx([a.logprob for a in single], abs=1e-5)
    assert all(a.text in loaded.answers and a.logprob <= 0 for a in batched)
    for a in batched:  # the next most likely answers, best first, for the soft vote
        logprobs = [lp for _, lp in a.alternatives]
        assert len(a.alternatives) == cfg.predict.alternatives and a.text not in dict(a.alternatives)
        assert logprobs == sorted(logprobs, reverse=True) and logprobs[0] <= a.logprob
    px = engine.images(images[:4])
    ids = processor.tokenizer(questions[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        same = [m(pixel_values=px, input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits
                for m in (model, loaded)]  # fmt: skip
    assert torch.allclose(*same, atol=1e-5)


@pytest.mark.e2e(minutes=0.5)
def test_a_demo_of_two_experiments_side_by_side_one_at_another_seed_trains_both_on_the_same_folds_and_blends_them(demo_root: Path, tmp_path: Path) -> None:
    sets = [f"data.root={demo_root}", f"workdir={tmp_path}", *SMALL, "train.max_steps=20", "train.eval_steps=0", "tune.trials=2"]
    args = ["demo", "-c", "configs/demo_classifier_patch.yaml", "--with", "configs/demo_classifier.yaml@7", "--jobs", "2"]
    res = CliRunner().invoke(app, [*args, *[x for s in sets for x in ("--set", s)]])
    assert res.exit_code == 0, res.output
    cfg, comp, folds = classifier_run(demo_root, tmp_path, "experiment=demo_classifier_seed7", "seed=7")
    oof = read_split(cfg, "oof")
    assert len(oof) == len(comp.train) and set(oof["decoding"]) == {"greedy"} and set(oof["prompt"]) == {"short_answer"}
    exp = tmp_path / "experiments"
    assert (exp / "demo_classifier_seed7" / "folds.csv").read_bytes() == (exp / "demo_classifier_patch" / "folds.csv").read_bytes()
    assert (exp / "demo_classifier_seed7" / "cv.json").is_file() and not (exp / "demo_classifier_seed7" / "tuned.yaml").exists()
    assert "seed: 7" in (exp / "demo_classifier_seed7" / "config.yaml").read_text()
    blend = json.loads(next((tmp_path / "submissions").glob("*-demo_classifier_patch-ensemble.json")).read_text())
    assert {"demo_classifier_seed7:short_answer/greedy", "short_answer/greedy"} <= set(blend["members"])
    assert "demo_classifier_patch-ensemble" in (tmp_path / "submissions" / "leaderboard.csv").read_text()


@pytest.mark.parametrize("vision_config", [{"model_type": "convnext", "hidden_sizes": [8, 16], "depths": [1, 1, 1, 1]},
                                           {"model_type": "conv_stem", "hidden_sizes": [8, 16], "strides": [2]}])  # fmt: skip
def test_a_backbone_config_transformers_cannot_build_is_one_line_naming_the_key(vision_config: dict) -> None:
    from competition.classifier import build_classifier
    from competition.errors import ConfigError
    from competition.model_config import ClassifierConfig

    bad = ClassifierConfig(vision_config=vision_config)
    with pytest.raises(ConfigError, match=r"^model\.classifier\.vision_config: transformers cannot build") as e:
        build_classifier(bad, ["what is it"], ["yes", "no"], 0)
    assert "\n" not in str(e.value)


def test_a_classifier_on_pretrained_backbones_from_folders_reloads_to_the_same_logits(tmp_path: Path) -> None:
    """The GPU user's path: a SigLIP checkpoint (vision half used) and a BERT with its tokenizer, by folder."""
    from transformers import BertConfig, BertModel, SiglipConfig, SiglipImageProcessor, SiglipModel

    from competition.classifier import build_classifier, load_classifier, save_classifier
    from competition.model_config import ClassifierConfig
    from competition.tokenizer import train_word_tokenizer

    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    siglip = SiglipModel(SiglipConfig(vision_config={**small, "image_size": 32, "patch_size": 8},
                                      text_config={**small, "vocab_size": 99}))  # fmt: skip
    siglip.save_pretrained(tmp_path / "siglip")
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "siglip")
    tok = train_word_tokenizer(["what color is the circle", "how many squares are there"])
    BertModel(BertConfig(**small, vocab_size=len(tok))).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    c = ClassifierConfig(vision=str(tmp_path / "siglip"), text=str(tmp_path / "bert"), hidden=32, fusion_heads=2)
    model, processor = build_classifier(c, [], ["yes", "no", "red"], 0)
    patch = siglip.vision_model.embeddings.patch_embedding.weight
    assert torch.equal(model.vision_tower.embeddings.patch_embedding.weight, patch)  # the checkpoint's, not random
    save_classifier(model, processor, tmp_path / "out")
    loaded, processor2 = load_classifier(tmp_path / "out")
    px = torch.randn(2, 3, 32, 32)
    ids = processor2.tokenizer(["what color is the circle", "how many squares"], padding=True, return_tensors="pt")
    with torch.no_grad():
        same = [m.eval()(pixel_values=px, input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits
                for m in (model, loaded)]  # fmt: skip
    assert torch.allclose(*same, atol=1e-5)


def test_a_pooled_token_is_the_maximum_of_the_map_over_its_cells_and_survives_a_reload(tmp_path: Path) -> None:
    from competition.classifier import build_classifier, load_classifier, save_classifier
    from competition.model_config import ClassifierConfig

    stem = {"model_type": "conv_stem", "hidden_sizes": [8, 16], "strides": [2, 2], "downsample": "max"}
    c = ClassifierConfig(vision_config=stem, image_size=16, hidden=32, pooled_token=True)
    model, processor = build_classifier(c, ["what shape is it"], ["circle", "square"], 0)
    model.eval()
    px = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        cells = model.vision_tower(pixel_values=px).last_hidden_state.flatten(2).transpose(1, 2)  # (3, 16, 16)
        tokens = model.image_tokens(px)
        assert tokens.shape[1] == cells.shape[1] + 1
        assert torch.allclose(tokens[:, 0], model.image_proj(cells.amax(1)), atol=1e-6)
        assert torch.allclose(tokens[:, 1:], model.image_proj(cells), atol=1e-6)
    save_classifier(model, processor, tmp_path / "out")
    loaded, _ = load_classifier(tmp_path / "out")
    assert loaded.settings.pooled_token and loaded.image_tokens(px).shape == tokens.shape


def test_a_summary_token_starts_the_fusion_from_the_mean_image_token_and_word() -> None:
    from competition.classifier import build_classifier
    from competition.model_config import ClassifierConfig

    stem = {"model_type": "conv_stem", "hidden_sizes": [8, 16], "strides": [2, 2]}
    c = ClassifierConfig(vision_config=stem, image_size=16, hidden=32, summary_token=True)
    model, _ = build_classifier(c, ["what shape is it"], ["circle", "square"], 0)
    img, words, mask = torch.randn(2, 4, 32), torch.randn(2, 3, 32), torch.tensor([[1, 1, 1], [1, 1, 0]])
    seen = []
    model.fusion.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, 0]))
    model.fused(img, words, mask)
    expected = img.mean(1) + torch.stack([words[0].mean(0), words[1, :2].mean(0)]) + model.positions[0, 0]
    assert torch.allclose(seen[0], expected, atol=1e-6)


def test_glimpses_weigh_the_image_cells_by_the_question(tmp_path: Path) -> None:
    from competition.classifier import build_classifier, load_classifier, save_classifier
    from competition.model_config import ClassifierConfig

    stem = {"model_type": "conv_stem", "hidden_sizes": [8, 16], "strides": [2, 2]}
    c = ClassifierConfig(vision_config=stem, image_size=16, hidden=32, fusion_layers=0, glimpses=2, glimpse_fit=False)
    model, processor = build_classifier(c, ["what shape is it"], ["circle", "square"], 0)
    img, mask = torch.randn(2, 4, 32), torch.ones(2, 3, dtype=torch.long)
    words = torch.randn(1, 3, 32).expand(2, -1, -1)
    seen = model.glimpsed(img, words.mean(1))
    assert seen.shape == (2, 2 * 2 * 32)  # two glimpses, then each one's product with the question
    asked = words.mean(1)[:, None].expand(-1, 4, -1)
    weights = model.attend(torch.cat([img, asked, img * asked], -1)).softmax(1)
    first = (weights[..., :1] * img).sum(1)
    assert torch.allclose(seen[:, :32], first, atol=1e-6)  # a weighted mean of the cells
    assert torch.allclose(seen[:, 64:96], first * words.mean(1), atol=1e-6)
    other = model.glimpsed(img, torch.randn(2, 32))
    assert not torch.allclose(seen, other)  # another question weighs them otherwise
    assert model.fused(img, words, mask).shape == (2, 32)
    save_classifier(model, processor, tmp_path / "out")
    loaded, _ = load_classifier(tmp_path / "out")
    assert torch.allclose(loaded.glimpsed(img, words.mean(1)), seen, atol=1e-6)
    model.settings.glimpse_fit = True  # each glimpse's best cell score comes last
    fit = model.glimpsed(img, words.mean(1))
    scores = model.attend(torch.cat([img, asked, img * asked], -1))
    assert fit.shape == (2, 2 * 2 * 32 + 2) and torch.equal(fit[:, :-2], seen)
    assert torch.allclose(fit[:, -2:], scores.amax(1), atol=1e-6)


def test_glimpses_under_the_fusion_transformer_are_refused() -> None:
    from competition.errors import ConfigError

    with pytest.raises(ConfigError, match=r"glimpses \(2\) reads the image only under fusion_layers 0"):
        load_config(None, ["model.classifier.glimpses=2"])
    assert load_config(None, ["model.classifier.glimpses=2", "model.classifier.fusion_layers=0"]).model.classifier.glimpses == 2


def test_image_size_data_is_the_pictures_median_longer_side_rounded_up_to_the_stem_and_capped(tmp_path: Path) -> None:
    """Longer sides 30, 70 and 200 px: the median 70 rounded up to the stem's 16 px cells is 80; all at 300 px: the
    cap, 128 (DATA_SIDE_CAP); the model, its processor and the plan's model line carry the number."""
    from PIL import Image

    from competition.data import load_competition
    from competition.images import DATA_SIDE_CAP

    def folder(sizes: dict[str, tuple[int, int]], root: Path) -> Path:
        (root / "image" / "train").mkdir(parents=True)
        (root / "image" / "test").mkdir(parents=True)
        for image, size in sizes.items():
            Image.new("RGB", size, "white").save(root / "image" / "train" / f"{image}.png")
        Image.new("RGB", (8, 8)).save(root / "image" / "test" / "x.png")
        rows = "".join(f"T{i},{image},What color is it?,white\n" for i, image in enumerate(sizes))
        (root / "train.csv").write_text("ID,image_id,question,answer\n" + rows)
        (root / "test.csv").write_text("ID,image_id,question\nQ0,x,What color is it?\n")
        (root / "sample_submission.csv").write_text("ID,answer\nQ0,white\n")
        return root

    for sizes, side in (({"a": (30, 10), "b": (50, 70), "c": (200, 90)}, 80), ({"a": (300, 300)}, DATA_SIDE_CAP)):
        cfg = load_config("configs/demo_classifier.yaml", [f"data.root={folder(sizes, tmp_path / str(side))}",
                                                           "model.classifier.image_size=data"])  # fmt: skip
        comp = load_competition(cfg.data)
        family = family_for(cfg)
        model, processor = family.build(comp, comp.train)
        assert model.settings.image_size == side
        assert processor.image_processor.crop_size == {"height": side, "width": side}
        assert f"@ {side}px" in family.describe()[1]
    assert "image_size: data" in family_for(cfg).describe()[1]  # planned before the data is read


def test_balanced_answer_weights_make_the_even_guess_beat_the_prior_on_a_skewed_yes_no_type() -> None:
    """Three 'no' and one 'yes' to 'is there a': the weights are 4/6 and 2 (colour's even answers 1), and the
    loss of answering 'yes' at 0.5 falls below that of the prior (0.25) once weighted, where unweighted it is above."""
    import pandas as pd

    from competition.classifier import answer_loss, balanced_weights

    rows = pd.DataFrame({"question": ["Is there a cube?"] * 4 + ["What color is the cube?"] * 2,
                         "answer": ["no", "no", "no", "yes", "red", "blue"]})  # fmt: skip
    weights = balanced_weights(rows)
    assert weights == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0, 1.0, 1.0])
    labels, w = torch.tensor([0, 0, 0, 1]), torch.tensor(weights[:4])

    def loss(p_yes: float, weights: torch.Tensor | None) -> float:
        logits = torch.log(torch.tensor([[1 - p_yes, p_yes]] * 4))
        return float(answer_loss(logits, labels, "ce", weights))

    assert loss(0.25, None) < loss(0.5, None)
    assert loss(0.5, w) < loss(0.25, w)
