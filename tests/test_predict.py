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
from typing import Any

import pandas as pd
import pytest
import torch

from competition.config import DecodingConfig, load_config
from competition.data import load_competition
from competition.engine import FALLBACK_MAX_NEW_TOKENS, Answer, Engine, RowSampler
from competition.folds import fold_rows, read_folds
from competition.images import Images, ImageTransform
from competition.modeling import load_trained
from competition.predictions import read_predictions


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
    return {a.row: (a.text, a.logprob) for batch in engine.answer("short_answer", d, questions, images) for a in batch}


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


def test_ranked_answers_carry_their_next_best_alternatives(trained: tuple[list[str], Path]) -> None:
    sets, _ = trained
    engine, questions, images, vocab = engine_for(sets, batch_size=16, alternatives=3)
    rank = DecodingConfig(name="r", rank=len(vocab))
    answers = [a for batch in engine.answer("short_answer", rank, questions[:40], images[:40]) for a in batch]
    engine.alternatives = 0
    plain = [a for batch in engine.answer("short_answer", rank, questions[:40], images[:40]) for a in batch]
    assert [a.text for a in answers] == [a.text for a in plain] and all(a.alternatives == () for a in plain)
    for a in answers:
        texts, logprobs = [t for t, _ in a.alternatives], [lp for _, lp in a.alternatives]
        assert len(texts) == 3 and a.text not in texts and set(texts) <= set(vocab)
        assert logprobs == sorted(logprobs, reverse=True) and logprobs[0] <= a.logprob


def test_constrained_answers_are_never_cut_to_a_prefix(trained: tuple[list[str], Path]) -> None:
    sets, _ = trained
    engine, questions, images, vocab = engine_for(sets, batch_size=16)
    multi_token = [v for v in vocab if len(engine.tok(v, add_special_tokens=False)["input_ids"]) > 1]
    assert multi_token, "the demo vocabulary should hold multi-token answers"
    engine = Engine(engine.model, engine.processor, engine.images, batch_size=16, vocabulary=multi_token)
    answers = run(engine, DecodingConfig(name="c", constrained=True, max_new_tokens=1), questions, images)
    assert {t for t, _ in answers.values()} <= set(multi_token)
    assert engine.cut_answers == 0


def test_answers_cut_by_max_new_tokens_are_counted(trained: tuple[list[str], Path]) -> None:
    sets, _ = trained
    engine, questions, images, _ = engine_for(sets, batch_size=16)
    run(engine, DecodingConfig(name="greedy"), questions, images)
    assert engine.cut_answers == 0, "with the derived limit the trained model ends every answer with EOS"
    run(engine, DecodingConfig(name="short", max_new_tokens=1), questions, images)
    assert engine.cut_answers > 0


def test_default_max_new_tokens_is_the_longest_answer_plus_eos(trained: tuple[list[str], Path]) -> None:
    sets, _ = trained
    engine, *_ = engine_for(sets)
    tok = engine.tok
    longest = "top right bottom left"
    vocab = ["yes", longest, "top"]
    sized = Engine(engine.model, engine.processor, engine.images, vocabulary=vocab)
    assert sized.default_max_new_tokens == len(tok(longest, add_special_tokens=False)["input_ids"]) + 1 == 5
    assert sized.max_new_tokens(DecodingConfig(name="short", max_new_tokens=2)) == 2
    assert sized.max_new_tokens(DecodingConfig(name="c", constrained=True, max_new_tokens=2)) == 5
    bare = Engine(engine.model, engine.processor, engine.images)
    assert bare.max_new_tokens(DecodingConfig(name="greedy")) == FALLBACK_MAX_NEW_TOKENS


def raise_oom_above(model: Any, rows: int) -> None:
    """Make model.generate fail with out-of-memory on batches of more than `rows` rows."""
    generate = model.generate

    def limited(**kw: Any) -> Any:
        if kw["input_ids"].shape[0] > rows:
            raise torch.OutOfMemoryError("simulated")
        return generate(**kw)

    model.generate = limited


def test_a_sampled_answer_depends_on_its_row_not_its_batch(trained: tuple[list[str], Path]) -> None:
    sets, _ = trained
    sample = DecodingConfig(name="sample", do_sample=True, temperature=1.0)
    engines = [engine_for(sets, batch_size=b, prefix_cache=c)[0] for b, c in [(1, False), (6, True), (64, True)]]
    halved, questions, images, _ = engine_for(sets, batch_size=64, prefix_cache=False)
    raise_oom_above(halved.model, 3)
    first, *others = (run(e, sample, questions, images) for e in [*engines, halved])
    for other in others:
        assert {r: t for r, (t, _) in other.items()} == {r: t for r, (t, _) in first.items()}
        assert max(abs(other[r][1] - first[r][1]) for r in first) < 1e-4
    reseeded = run(engines[0], sample.model_copy(update={"seed": 1}), questions, images)
    assert sum(reseeded[r][0] != first[r][0] for r in first) > 0


def test_row_sampler_draws_from_the_top_p_softmax() -> None:
    probs = torch.tensor([0.6, 0.3, 0.1])
    scores, ids = probs.log().expand(4000, 3), torch.zeros((4000, 1), dtype=torch.long)
    keys = [f"row{i}" for i in range(4000)]
    drawn = RowSampler(DecodingConfig(name="s", do_sample=True), keys)(ids, scores).argmax(-1)
    assert torch.allclose(drawn.bincount(minlength=3) / 4000, probs, atol=0.03)
    nucleus = RowSampler(DecodingConfig(name="s", do_sample=True, top_p=0.5), keys)(ids, scores).argmax(-1)
    assert (nucleus == 0).all()


def test_beam_sampling_is_refused() -> None:
    with pytest.raises(ValueError, match="num_beams=1"):
        DecodingConfig(name="bs", num_beams=2, do_sample=True)


def test_a_fold_lacking_one_of_a_protected_pair_scores_it_right(
    trained: tuple[list[str], Path], data_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'none' only in fold 0's validation, '0' in its training part: a predicted 'none' is right."""
    from competition.predict import predict_fold
    from competition.predictions import oof_frame

    sets, work = trained
    sets = [*copy_workdir(sets, work, tmp_path / "work"), f"data.root={data_copy}", "predict.prompts=[short_answer]",
            "predict.decodings=[{name: greedy}]"]  # fmt: skip
    cfg = load_config("configs/demo.yaml", sets)
    folds = read_folds(cfg)
    train = pd.read_csv(data_copy / "train.csv", dtype=str, keep_default_na=False)
    fold_of = train["image_id"].map(folds.drop_duplicates("image_id").set_index("image_id")["fold"])
    val_image, train_image = train["image_id"][fold_of == 0].iloc[0], train["image_id"][fold_of != 0].iloc[0]
    train.loc[train["image_id"] == val_image, "answer"] = "none"
    train.loc[train["image_id"] == train_image, "answer"] = "0"
    train.to_csv(data_copy / "train.csv", index=False)
    monkeypatch.setattr(Engine, "answer", lambda self, p, d, q, i, rows, tick=None: iter([[Answer(r, "none", 0.0) for r in rows]]))
    comp = load_competition(cfg.data)
    shutil.rmtree(cfg.fold_dir(0) / "predictions", ignore_errors=True)
    predict_fold(cfg, comp, folds, 0, ("oof",))
    df = oof_frame(cfg, comp, folds)
    assert (df["gold_raw"] == "none").sum() > 0 and df.loc[df["gold_raw"] == "none", "correct"].all()


def predict_cmd(sets: list[str], *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "competition", "predict", "-c", "configs/demo.yaml", "--fold", "0", *extra]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def copy_workdir(sets: list[str], src: Path, dst: Path) -> list[str]:
    shutil.copytree(src, dst)
    return [s if not s.startswith("workdir=") else f"workdir={dst}" for s in sets]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.e2e(minutes=0.4)
def test_a_prediction_file_from_before_alternatives_reads_as_having_none(tmp_path: Path) -> None:
    path = tmp_path / "oof.jsonl"
    row = {"id": "T0", "fold": 0, "split": "oof", "prompt": "p", "decoding": "greedy", "raw": "Yes", "answer": "yes",
           "logprob": -0.1}  # fmt: skip
    path.write_text(json.dumps(row) + "\n")
    rows = read_predictions(path)
    assert rows["alternatives"].tolist() == [[]] and rows["answer"].tolist() == ["yes"]


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


@pytest.mark.e2e(minutes=0.4)
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
    rows, want = ([json.loads(line) for line in (tmp_path / d / rel).read_text().splitlines()] for d in ("two", "one"))
    assert [{**r, "logprob": 0} for r in rows] == [{**r, "logprob": 0} for r in want]
    # a shard's batches pad differently, which moves a log-probability in its last bits
    assert max(abs(r["logprob"] - w["logprob"]) for r, w in zip(rows, want, strict=True)) < 1e-3
    assert {r["prompt"] for r in rows} == {"short_answer", "plain"}
    assert {r["decoding"] for r in rows} == {"greedy", "beam2", "vocab"}


def test_a_flipped_view_asks_of_the_flipped_picture_and_its_answers_read_as_of_the_picture(
    trained: tuple[list[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import competition.families
    from competition.augment import VIEW_MARK, split_mark, swap_sides
    from competition.predict import predict_fold

    sets, work = trained
    sets = copy_workdir(sets, work, tmp_path / "views")
    asked: list[tuple[tuple[str, str], str, str]] = []

    class Echo:  # sees the thing at the top left of the picture: where the view's flip moved it
        cut_answers = 0

        def answer(self, prompt: str, d: DecodingConfig, questions: list[str], images: list[str], todo: list[int],
                   tick: Any = None) -> Any:  # fmt: skip
            asked.extend(((prompt, d.name), questions[i], images[i]) for i in todo)
            view = [split_mark(images[i])[1] for i in todo]
            yield [Answer(i, swap_sides("top left", v), -0.1, ((swap_sides("bottom right", v), -3.0),))
                   for i, v in zip(todo, view, strict=True)]  # fmt: skip

    monkeypatch.setattr(competition.families, "fold_engine", lambda *a, **k: Echo())
    decodings = "predict.decodings=[{name: greedy}, {name: hv, view: hv}]"
    cfg = load_config("configs/demo.yaml", [*sets, "train.flip_keep=color", decodings])
    comp = load_competition(cfg.data)
    [path] = predict_fold(cfg, comp, read_folds(cfg), 0, ("oof",))
    rows = read_predictions(path)
    assert set(rows["decoding"]) == {"greedy", "hv"} and set(rows["answer"]) == {"top left"}
    assert {alt[0][0] for alt in rows["alternatives"]} == {"bottom right"}
    val = fold_rows(comp, read_folds(cfg), 0, "val")
    kept = val["question"].str.contains("color", case=False)
    marked = [i if k else i + VIEW_MARK + "hv" for i, k in zip(val["image_id"], kept, strict=True)]
    assert sorted((q, i) for job, q, i in asked if job == ("short_answer", "hv")) == sorted(
        (swap_sides(q, "hv") if VIEW_MARK in i else q, i) for q, i in zip(val["question"], marked, strict=True)
    )
    assert kept.any() and not kept.all()
