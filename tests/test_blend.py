"""Blends across members and experiments: nested CV keeps a blend that memorises the OOF off the top of the
leaderboard, weights per question type are fitted on OOF rows only, other experiments join when their folds match."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.blend import Blend, apply_blend, best_member, choose_blend, fit_candidate, nested_cv
from competition.config import load_config
from competition.ensemble import run_ensemble
from competition.errors import ConfigError
from competition.folds import read_folds
from competition.predictions import file_for, oof_frame, read_predictions, write_canonical
from competition.submit import leaderboard
from competition.vote import Candidate, score
from tests.test_ensemble import predicted

CANDIDATES = [Candidate("majority"), Candidate("weighted", fit=True), Candidate("weighted", fit=True, by_type=True)]


def noisy_oof(seed: int, n: int = 300, noise: int = 12) -> tuple[pd.DataFrame, pd.Series, pd.Series, pd.Series]:
    """One member right 60% of the time (wrong answers carry no signal) and `noise` members answering at random."""
    rng = np.random.default_rng(seed)
    ids = [f"q{i}" for i in range(n)]
    gold = pd.Series(rng.choice(list("abc"), n), index=ids)
    shift = {"a": "b", "b": "c", "c": "a"}
    wrong = np.array([shift[g] if r < 0.5 else shift[shift[g]] for g, r in zip(gold, rng.random(n), strict=True)])
    rows = [pd.DataFrame({"id": ids, "member": f"noise{m:02d}", "answer": rng.choice(list("abc"), n), "logprob": -1.0})
            for m in range(noise)]  # fmt: skip
    good = np.where(rng.random(n) < 0.6, gold.to_numpy(), wrong)
    rows.append(pd.DataFrame({"id": ids, "member": "good", "answer": good, "logprob": -1.0}))
    qtype = pd.Series(rng.choice([f"t{k}" for k in range(5)], n), index=ids)
    return pd.concat(rows, ignore_index=True), gold, qtype, pd.Series(np.arange(n) % 3, index=ids)


@pytest.mark.parametrize("seed", [0, 1])
def test_nested_cv_sees_through_a_blend_that_memorises_the_oof(seed: int) -> None:
    oof, gold, qtype, fold_of = noisy_oof(seed)
    member = score(apply_blend(best_member(oof, gold), oof, qtype), gold)
    blend, in_sample = choose_blend(oof, gold, qtype, CANDIDATES)
    assert blend.weights and in_sample > member  # fitted on its own rows, the blend looks better than the member
    assert nested_cv(oof, gold, qtype, fold_of, CANDIDATES) < member  # scored on rows it never saw, it is not


def test_weights_per_question_type_come_from_that_types_rows() -> None:
    oof, gold, qtype, _ = noisy_oof(0)
    typed = fit_candidate(Candidate("weighted", fit=True, by_type=True), oof, gold, qtype)
    assert set(typed.by_type) == set(qtype)
    changed = oof.copy()
    t0 = changed["id"].map(qtype) == "t0"
    changed.loc[t0, "answer"] = "zzz"  # another type's rows cannot move these weights
    again = fit_candidate(Candidate("weighted", fit=True, by_type=True), changed, gold, qtype)
    assert {t: w for t, w in again.by_type.items() if t != "t0"} == {t: w for t, w in typed.by_type.items() if t != "t0"}
    assert apply_blend(Blend("weighted", 90.0, None, {"t0": {"good": 1.0}}), oof, qtype)["id"].tolist() == list(gold.index)


def add_noise_members(cfg: object, comp: object, n: int, seed: int = 0) -> None:
    """n members answering with other questions' gold answers (no signal) beside the hand-made ones."""
    rng = np.random.default_rng(seed)
    for fold in range(cfg.folds.k):
        for split in ("oof", "test"):
            path = file_for(cfg, fold, split)
            rows = read_predictions(path)
            good = rows[rows["prompt"] == "short_answer"]
            noise = [good.assign(decoding=f"noise{m}", answer=rng.permutation(good["answer"].to_numpy()))
                     for m in range(n)]  # fmt: skip
            write_canonical(pd.concat([rows, *noise], ignore_index=True), path)


def test_the_leaderboard_ranks_by_nested_cv_and_test_rows_never_fit(data_copy: Path, tmp_path: Path) -> None:
    cfg, comp, folds = predicted(data_copy, tmp_path / "w", ["ensemble.methods=[weighted]", "ensemble.per_type=true"])
    add_noise_members(cfg, comp, 8)
    res = run_ensemble(cfg, comp, folds)
    assert res["cv"] <= res["cv_in_sample"]
    assert not any(w for m, w in (res["weights"] or {}).items() if "noise" in m)  # ensemble selection leaves noise out
    board = leaderboard(cfg.submissions_dir)
    assert board.iloc[0]["cv"] == pytest.approx(max(res["cv"], *res["members"].values()))  # by nested CV, not in-sample
    for fold in range(cfg.folds.k):  # scramble every test answer: the fitted blend must not move
        path = file_for(cfg, fold, "test")
        rows = read_predictions(path)
        write_canonical(rows.assign(answer=rows["answer"].sample(frac=1, random_state=fold).to_numpy()), path)
    again = run_ensemble(cfg, comp, folds)
    assert (again["weights"], again["weights_by_type"], again["cv"]) == (res["weights"], res["weights_by_type"], res["cv"])


def test_other_experiments_join_when_their_folds_match(data_copy: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    predicted(data_copy, work, ["experiment=other"])
    cfg, comp, folds = predicted(data_copy, work, ["ensemble.experiments=[other]"])
    members = set(oof_frame(cfg, comp, folds)["member"])
    assert {"short_answer/greedy", "other:short_answer/greedy", "other:plain/greedy"} <= members
    assert "other:short_answer/greedy" in run_ensemble(cfg, comp, folds)["members"]
    other = cfg.model_copy(update={"experiment": "other"})
    nowhere = load_config("configs/demo.yaml", [f"data.root={data_copy}", f"workdir={work}",
                                                "ensemble.experiments=[nowhere]"])  # fmt: skip
    with pytest.raises(ConfigError, match="unknown experiment 'nowhere'"):
        oof_frame(nowhere, comp, folds)
    shutil.move(file_for(other, 1, "test"), tmp_path / "kept.jsonl")
    with pytest.raises(ConfigError, match=r"'other' lacks fold 1's test predictions"):
        run_ensemble(cfg, comp, folds)
    shutil.move(tmp_path / "kept.jsonl", file_for(other, 1, "test"))
    refolded = read_folds(other).assign(fold=lambda d: (d["fold"] + 1) % cfg.folds.k)
    refolded.to_csv(other.exp_dir / "folds.csv", index=False)
    with pytest.raises(ConfigError, match=r"'other' was not trained on the folds of 'demo'"):
        oof_frame(cfg, comp, folds)


def test_cv_shows_how_often_members_agree_and_the_oracle(data_copy: Path, tmp_path: Path) -> None:
    from competition.cv import run_cv

    cfg, comp, folds = predicted(data_copy, tmp_path / "w")
    tables = run_cv(cfg, comp, folds)
    oof = oof_frame(cfg, comp, folds)
    right = oof.pivot_table(index="id", columns="member", values="correct", aggfunc="first")
    assert tables["oracle"] == pytest.approx(right.any(axis=1).mean())
    assert tables["oracle"] > max(m["accuracy"] for m in tables["members"])
    agree = pd.DataFrame(tables["agreement"]).set_index("member")
    assert np.diag(agree.to_numpy(float)).tolist() == [1.0, 1.0] and 0 < agree.iloc[0, 1] < 1
    assert (cfg.exp_dir / "members.png").stat().st_size > 1000


def test_nested_cv_needs_two_folds() -> None:
    oof, gold, qtype, fold_of = noisy_oof(0, noise=2)
    assert nested_cv(oof, gold, qtype, fold_of * 0, CANDIDATES) is None


def test_a_stacker_learns_whom_to_trust_from_confidence() -> None:
    rng = np.random.default_rng(0)
    n = 600
    ids = [f"q{i}" for i in range(n)]
    gold = pd.Series(rng.choice(list("abcd"), n), index=ids)
    shift = dict(zip("abcd", "bcda", strict=True))
    a_right, b_right = rng.random(n) < 0.6, rng.random(n) < 0.6
    a = pd.DataFrame({"id": ids, "member": "a", "answer": np.where(a_right, gold, gold.map(shift)),
                      "logprob": np.where(a_right, -0.1, -3.0)})  # a knows when it is right
    b = pd.DataFrame({"id": ids, "member": "b", "answer": np.where(b_right, gold, gold.map(shift).map(shift)),
                      "logprob": -0.05})  # b is always sure: log-probability tie-breaks follow b  # fmt: skip
    oof, qtype, fold_of = pd.concat([a, b], ignore_index=True), pd.Series("t", index=ids), pd.Series(np.arange(n) % 3, index=ids)
    votes = nested_cv(oof, gold, qtype, fold_of, CANDIDATES)
    stacked = nested_cv(oof, gold, qtype, fold_of, CANDIDATES, stack=True)
    assert votes < 0.65 < 0.78 < stacked  # a when sure, else b: about 0.6 + 0.4 x 0.6 = 0.84
    blend, _ = choose_blend(oof, gold, qtype, CANDIDATES, stack=True)
    twice = pd.concat([oof, oof], ignore_index=True)  # test rows: one copy per fold model gives the same features
    assert blend.method == "stack" and apply_blend(blend, twice, qtype)["answer"].equals(apply_blend(blend, oof, qtype)["answer"])


def test_a_stacker_by_question_type_trusts_each_member_where_it_is_strong() -> None:
    rng = np.random.default_rng(1)
    n = 900
    ids = [f"q{i}" for i in range(n)]
    gold = pd.Series(rng.choice(list("abcd"), n), index=ids)
    qtype = pd.Series(rng.choice(["count", "colour"], n), index=ids)
    shift = dict(zip("abcd", "bcda", strict=True))
    strong = {"a": "count", "b": "colour"}  # each member is right 90% of the time on its type, 30% on the other
    members = []
    for m, t in strong.items():
        right = rng.random(n) < np.where(qtype == t, 0.9, 0.3)
        wrong = gold.map(shift) if m == "a" else gold.map(shift).map(shift)
        members.append(pd.DataFrame({"id": ids, "member": m, "answer": np.where(right, gold, wrong), "logprob": -0.5}))
    oof, fold_of = pd.concat(members, ignore_index=True), pd.Series(np.arange(n) % 3, index=ids)
    single = nested_cv(oof, gold, qtype, fold_of, [])
    stacked = nested_cv(oof, gold, qtype, fold_of, [], stack=True)
    assert single < 0.65 < 0.85 < stacked  # the global stacker cannot tell them apart; by type, 0.9 + agreement
    blend, _ = choose_blend(oof, gold, qtype, [], stack=True)
    assert blend.types == ("colour", "count") and blend.params()["method"] == "stack by type"


def test_an_experiment_that_takes_away_from_the_blend_is_left_out() -> None:
    from competition.ensemble import lean_blend
    from competition.metrics import Gold

    oof, gold, qtype, fold = noisy_oof(seed=1, noise=6)
    oof["member"] = oof["member"].where(oof["member"] == "good", "noise:" + oof["member"])  # the noise: another experiment
    folds = fold.rename("fold").rename_axis("id").reset_index()
    for drop in (True, False):
        cfg = load_config(None, ["experiment=main", "ensemble.stack=false", f"ensemble.drop_subtracting={drop}"])
        kept, (_, cv, _), added, dropped = lean_blend(cfg, oof, Gold.of(gold), qtype, folds)
        if drop:
            assert dropped == ["noise"] and set(kept["member"]) == {"good"} and added == {}
            assert cv == pytest.approx(score(kept[["id", "answer"]], gold))
        else:
            assert dropped == [] and added["noise"] < 0 and len(kept) == len(oof)
