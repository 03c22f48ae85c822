"""model.family=vlm on tiny random-init checkpoints of several transformers families (tests/vlm_models.py): labels
cover the answer alone, the loss falls, batched answers equal one-at-a-time answers, a LoRA adapter reloads to the
same logits, and the fold / predict flow runs unchanged."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from competition.config import DecodingConfig, load_config
from competition.data import ANSWER, IMAGE, QUESTION
from competition.dataset import IGNORE
from competition.families import family_for
from competition.pipeline import stage_inputs
from competition.plan import dry_run_plan
from competition.predict import predict_fold
from competition.predictions import read_split
from competition.train import train_fold
from competition.vlm import VlmCollator, VlmEngine, VlmSet, apply_vlm_mode, load_vlm, load_vlm_trained, save_vlm
from tests.vlm_models import NEED_TORCHVISION, TINY_FAMILIES, save_tiny_vlm

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 20)}
ROWS = pd.DataFrame({QUESTION: [f"What color is picture {i}?" for i in range(8)],
                     ANSWER: [list(COLOURS)[i % 4] for i in range(8)], IMAGE: [f"im{i}" for i in range(8)]})  # fmt: skip


class Pictures:
    """Plain-colour images by id: the answer is the picture's colour."""

    def __call__(self, image_ids: list[str]) -> list[Image.Image]:
        return [Image.new("RGB", (40, 28), COLOURS[ROWS[ANSWER][int(i[2:])]]) for i in image_ids]


def texts() -> list[str]:
    return [*ROWS[QUESTION], *ROWS[ANSWER], "answer the question using a single word or phrase ."]


NO_TORCHVISION = importlib.util.find_spec("torchvision") is None
FAMILIES = [pytest.param(f, marks=pytest.mark.skipif(f in NEED_TORCHVISION and NO_TORCHVISION,
                                                     reason="its processor needs torchvision")) for f in TINY_FAMILIES]  # fmt: skip


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, save_tiny_vlm(request.param, folder, texts())


def vlm_config(path: Path, *sets: str) -> object:
    return load_config(None, ["model.family=vlm", f"model.name_or_path={path}", *sets]).model


def test_labels_cover_only_the_answer(checkpoint: tuple[str, Path]) -> None:
    _, path = checkpoint
    model, processor = load_vlm(vlm_config(path))
    batch = VlmCollator(Pictures(), processor)([VlmSet(processor, "short_answer", ROWS)[i] for i in (0, 1)])
    for row, labels in enumerate(batch["labels"]):
        kept = processor.tokenizer.decode(labels[labels != IGNORE], skip_special_tokens=True).strip()
        assert kept == ROWS[ANSWER][row], (kept, ROWS[ANSWER][row])
        assert int(labels[labels != IGNORE][-1]) == processor.tokenizer.eos_token_id  # the model learns to stop


@pytest.mark.train
def test_a_tiny_vlm_learns_the_colours(checkpoint: tuple[str, Path]) -> None:
    family, path = checkpoint
    torch.manual_seed(0)
    model, processor = load_vlm(vlm_config(path))
    model = apply_vlm_mode(model, load_config(None, ["train.mode=full"]).train)
    batch = VlmCollator(Pictures(), processor)(list(VlmSet(processor, "short_answer", ROWS)))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):  # a few dozen steps on the 8 examples
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (family, losses[0], losses[-1])
    model.eval()
    engine = VlmEngine(model, processor, Pictures(), batch_size=8, vocabulary=list(COLOURS))
    got = [a.text for b in engine.answer("short_answer", DecodingConfig(), list(ROWS[QUESTION]), list(ROWS[IMAGE]))
           for a in b]  # fmt: skip
    assert sum(g == a for g, a in zip(got, ROWS[ANSWER], strict=True)) >= 6, (family, got)


def test_batched_answers_equal_one_at_a_time(checkpoint: tuple[str, Path]) -> None:
    _, path = checkpoint
    model, processor = load_vlm(vlm_config(path))
    model.eval()
    questions, images = list(ROWS[QUESTION]), list(ROWS[IMAGE])
    for d in (DecodingConfig(max_new_tokens=4), DecodingConfig(name="vocab", constrained=True)):
        runs = []
        for size in (8, 1):
            engine = VlmEngine(model, processor, Pictures(), batch_size=size, vocabulary=list(COLOURS))
            runs.append([a for b in engine.answer("short_answer", d, questions, images) for a in b])
        assert [a.text for a in runs[0]] == [a.text for a in runs[1]]
        assert [a.logprob for a in runs[0]] == pytest.approx([a.logprob for a in runs[1]], abs=1e-4)
    assert all(a.text in COLOURS for a in runs[0])  # constrained: only training answers


def test_a_lora_adapter_reloads_to_identical_logits(checkpoint: tuple[str, Path], tmp_path: Path) -> None:
    family, path = checkpoint
    cfg = vlm_config(path)
    torch.manual_seed(1)
    model, processor = load_vlm(cfg)
    model = apply_vlm_mode(model, load_config(None, ["train.mode=lora", "train.lora.r=4"]).train)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))  # stands in for training: the adapter and projector move
    save_vlm(model, processor, tmp_path / "model", "lora", str(path))
    loaded, _ = load_vlm_trained(tmp_path / "model", cfg)
    batch = VlmCollator(Pictures(), processor)([VlmSet(processor, "short_answer", ROWS)[i] for i in range(3)])
    batch.pop("labels")
    model.eval()
    with torch.no_grad():
        before, after = model(**batch).logits, loaded(**batch).logits
    assert torch.allclose(before, after, atol=1e-4), (family, (before - after).abs().max())


@pytest.mark.train
def test_the_fold_flow_runs_on_a_vlm(demo_root: Path, tmp_path: Path) -> None:
    from competition.data import load_competition

    comp_texts = load_competition(load_config(None, [f"data.root={demo_root}"]).data)
    words = [*comp_texts.train[QUESTION], *comp_texts.train[ANSWER], *comp_texts.test[QUESTION], *texts()]
    path = save_tiny_vlm("idefics3", tmp_path / "base", words)
    sets = [f"data.root={demo_root}", f"workdir={tmp_path}", "model.family=vlm", f"model.name_or_path={path}",
            "folds.k=3", "train.mode=lora", "train.max_steps=12", "train.eval_steps=6", "train.eval_questions=20",
            "train.per_device_batch_size=8", "train.learning_rate=1e-3", "predict.batch_size=16",
            "predict.decodings=[{name: greedy}, {name: vocab, constrained: true}]"]  # fmt: skip
    cfg = load_config("configs/demo.yaml", sets)
    assert any("lora" in line for line in dry_run_plan(cfg, 0))
    comp, folds = stage_inputs(cfg)
    metrics, _ = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    assert metrics["steps"] == 12 and metrics["best_step"] in (6, 12)
    predict_fold(cfg, comp, folds, 0, ("oof", "test"))
    oof = read_split(cfg, "oof")
    assert set(oof["decoding"]) == {"greedy", "vocab"} and len(oof) == 2 * (folds["fold"] == 0).sum()
    vocab = set(comp.train[ANSWER])
    assert oof[oof["decoding"] == "vocab"]["answer"].isin(vocab).all()
    assert family_for(cfg).load(cfg.fold_dir(0) / "model")[0].training is False
