"""Inference engine: batched == one at a time, prefix reuse exact, constrained in vocabulary, resume, shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from competition.config import DecodingConfig, load_config
from competition.data import load_competition
from competition.dataset import Images
from competition.folds import read_folds
from competition.modeling import ImageTransform, load_trained
from competition.predict import Engine
from competition.train import fold_rows


def engine_for(sets: list[str], **kw: object) -> tuple[Engine, list[str], list[str], list[str]]:
    cfg = load_config("configs/demo.yaml", sets)
    comp = load_competition(cfg.data)
    folds = read_folds(cfg)
    model, processor = load_trained(cfg.fold_dir(0) / "model", cfg.model)
    val = fold_rows(comp, folds, 0, "val")
    vocab = fold_rows(comp, folds, 0, "train")["answer"].value_counts().index.tolist()
    images = Images(comp, "train", ImageTransform(processor, cfg.model.image_aspect_ratio), cache=True)
    return (
        Engine(model, processor, images, vocabulary=vocab, **kw),
        val["question"].tolist(),
        val["image_id"].tolist(),
        vocab,
    )


def run(engine: Engine, d: DecodingConfig, questions: list[str], images: list[str]) -> dict[int, tuple[str, float]]:
    return {r: (t, lp) for batch in engine.answer("short_answer", d, questions, images) for r, t, lp in batch}


def test_batched_prefix_cached_answers_equal_one_at_a_time(trained: tuple[list[str], Path]) -> None:
    sets, _ = trained
    cached, questions, images, _ = engine_for(sets, batch_size=16, prefix_cache=True)
    plain, *_ = engine_for(sets, batch_size=16, prefix_cache=False)
    single, *_ = engine_for(sets, batch_size=1, prefix_cache=False)
    greedy = DecodingConfig(name="greedy")
    a, b, c = (run(e, greedy, questions, images) for e in (cached, plain, single))
    assert len(a) == len(questions)
    assert {r: t for r, (t, _) in a.items()} == {r: t for r, (t, _) in b.items()} == {r: t for r, (t, _) in c.items()}
    assert max(abs(a[r][1] - c[r][1]) for r in a) < 1e-3
    assert len({t for t, _ in a.values()}) > 1, "the trained model should not give one answer to everything"


def test_constrained_and_ranked_answers_come_from_the_vocabulary(trained: tuple[list[str], Path]) -> None:
    sets, _ = trained
    engine, questions, images, vocab = engine_for(sets, batch_size=16)
    constrained = run(engine, DecodingConfig(name="c", constrained=True, max_new_tokens=6), questions, images)
    ranked = run(engine, DecodingConfig(name="r", rank=len(vocab)), questions, images)
    assert {t for t, _ in constrained.values()} <= set(vocab)
    assert {t for t, _ in ranked.values()} <= set(vocab)
    assert all(lp <= 0 for _, lp in ranked.values())


def predict_cmd(sets: list[str], *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "competition", "predict", "-c", "configs/demo.yaml", "--fold", "0", *extra]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def copy_workdir(sets: list[str], src: Path, dst: Path) -> list[str]:
    shutil.copytree(src, dst)
    return [s if not s.startswith("workdir=") else f"workdir={dst}" for s in sets]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_killed_predict_resumes_without_duplicates(trained: tuple[list[str], Path], tmp_path: Path) -> None:
    sets, work = trained
    ref_sets = copy_workdir(sets, work, tmp_path / "ref")
    kill_sets = copy_workdir(sets, work, tmp_path / "kill")
    subprocess.run(predict_cmd(ref_sets, "--split", "oof"), check=True, capture_output=True, env=ENV)
    out = tmp_path / "kill" / "experiments" / "demo" / "fold0" / "predictions" / "oof.jsonl"
    proc = subprocess.Popen(
        predict_cmd(kill_sets, "--split", "oof"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    deadline = time.time() + 120
    while (not out.exists() or out.read_text().count("\n") < 20) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = out.read_text().count("\n")
    ref = (tmp_path / "ref" / "experiments" / "demo" / "fold0" / "predictions" / "oof.jsonl").read_text()
    assert 0 < partial < ref.count("\n"), "the run was not killed mid-way"
    subprocess.run(predict_cmd(kill_sets, "--split", "oof"), check=True, capture_output=True, env=ENV)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    keys = [(r["id"], r["prompt"], r["decoding"]) for r in rows]
    assert len(keys) == len(set(keys)) == ref.count("\n")
    assert out.read_text() == ref


@pytest.mark.slow
def test_two_shard_processes_merge_to_the_one_process_result(trained: tuple[list[str], Path], tmp_path: Path) -> None:
    sets, work = trained
    one = copy_workdir(sets, work, tmp_path / "one")
    two = copy_workdir(sets, work, tmp_path / "two")
    subprocess.run(predict_cmd(one, "--split", "test"), check=True, capture_output=True, env=ENV)
    procs = [subprocess.Popen(predict_cmd(two, "--split", "test", "--shard", f"{i}/2"), env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]  # fmt: skip
    for p in procs:
        assert p.wait() == 0, p.stderr.read().decode()[-2000:]
    rel = Path("experiments/demo/fold0/predictions/test.jsonl")
    merged = (tmp_path / "two" / rel).read_text()
    assert merged == (tmp_path / "one" / rel).read_text()
    rows = [json.loads(line) for line in merged.splitlines()]
    assert {r["prompt"] for r in rows} == {"short_answer", "plain"}
    assert {r["decoding"] for r in rows} == {"greedy", "beam2", "vocab"}
