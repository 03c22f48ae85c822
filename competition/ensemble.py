"""The ensemble stage: gather members, choose the vote on OOF, vote the test set, write submissions.

    python -m competition ensemble -c configs/demo.yaml [--name NAME]

Members are (prompt, decoding) prediction sets; on OOF each question is answered by its own
fold's model, on test by every fold's model, so a member's fitted weight applies to all its folds.
Writes the ensemble and the best single member as submissions, ranked on the leaderboard; with a
solution.csv (held-out answers: the demo generator writes one) in the data folder, scores both on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from competition.config import Config, DataConfig
from competition.data import ANSWER, ID, Competition, read_answers
from competition.errors import DataError
from competition.metrics import majority_baseline
from competition.normalize import AnswerNormalizer, snap_to_vocab
from competition.predict import oof_frame, read_split
from competition.submit import read_submission, write_submission
from competition.tuned import load_tuned
from competition.vote import Candidate, load_external, score, select_method, vote


def candidates(cfg: Config) -> list[Candidate]:
    """Voting configurations to score on OOF, from the config."""
    e = cfg.ensemble
    out: list[Candidate] = []
    for m in e.methods:
        if m == "majority":
            out.append(Candidate("majority"))
        elif m == "weighted":
            out.append(Candidate("weighted", fit=True))
        else:
            out += [Candidate("fuzzy", t, fit=f) for t in e.thresholds for f in (False, True)]
    return out


def test_frame(cfg: Config) -> pd.DataFrame:
    """All folds' test rows as vote input: id, member (fold/prompt/decoding), answer, logprob."""
    rows = read_split(cfg, "test")
    rows["base"] = rows["prompt"] + "/" + rows["decoding"]
    rows["member"] = "fold" + rows["fold"].astype(str) + "/" + rows["base"]
    return rows


def expand_weights(weights: dict[str, float] | None, test: pd.DataFrame) -> dict[str, float] | None:
    """Member weights fitted on OOF (prompt/decoding) applied to each fold's copy of the member."""
    if weights is None:
        return None
    pairs = test[["member", "base"]].drop_duplicates()
    return {m: weights.get(b, 0.0) for m, b in zip(pairs["member"], pairs["base"], strict=True)}


def externals(cfg: Config) -> tuple[pd.DataFrame, dict[str, float]]:
    """External members' rows (normalized like ours) and their given weights."""
    frames, given = [], {}
    for ext in cfg.ensemble.external:
        member = f"ext/{ext.name}"
        frames.append(load_external(ext.path, member, cfg.data.id_col, cfg.data.answer_col))
        given[member] = ext.weight
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), given


def fill_empty(answers: pd.Series, comp: Competition, normalizer: AnswerNormalizer) -> pd.Series:
    """Empty answers (a model that said nothing) become the question type's most common training answer."""
    empty = answers.astype(str).str.strip() == ""
    if empty.any():
        test = comp.test.set_index(ID).loc[answers.index[empty]].reset_index()
        guess = majority_baseline(comp.train, test)
        answers = answers.copy()
        answers[empty.to_numpy()] = normalizer(guess).to_numpy()
    return answers


def run_ensemble(cfg: Config, comp: Competition, folds: pd.DataFrame, name: str = "ensemble") -> dict[str, Any]:
    """Choose the vote on OOF, vote the test set, write the ensemble and best-member submissions."""
    oof = oof_frame(cfg, comp, folds)
    gold = oof.drop_duplicates("id").set_index("id")["gold"]
    oof_votes = oof[["id", "member", "answer", "logprob"]]
    singles = oof.groupby("member")["correct"].mean().sort_values(ascending=False)
    method, params, cv = select_method(oof_votes, gold, candidates(cfg))
    if singles.iloc[0] > cv:  # a vote that follows the best member is a candidate too
        method, cv = "weighted", float(singles.iloc[0])
        params = {"threshold": params["threshold"], "weights": {m: float(m == singles.index[0]) for m in singles.index}}
    tuned = load_tuned(cfg).get("vote")
    if tuned:
        tuned_cv = score(vote(oof_votes, tuned["method"], tuned["weights"], tuned["threshold"]), gold)
        if tuned_cv > cv:
            method, params, cv = (
                tuned["method"],
                {"threshold": tuned["threshold"], "weights": tuned["weights"]},
                tuned_cv,
            )
    normalizer = AnswerNormalizer.of(cfg, comp)
    truth = read_solution(comp, normalizer)
    test = test_frame(cfg)
    ext_rows, ext_weights = externals(cfg)
    if len(ext_rows):
        ext_rows["answer"] = normalizer(ext_rows["answer"]).to_numpy()
    weights = expand_weights(params["weights"], test) or (
        {m: 1.0 for m in test["member"].unique()} if ext_weights else None
    )
    if ext_weights:
        weights = {**weights, **ext_weights}
        method = "weighted" if method == "majority" else method
    votes = pd.concat([test[["id", "member", "answer", "logprob"]], ext_rows], ignore_index=True)
    voted = fill_empty(vote(votes, method, weights, params["threshold"]).set_index("id")["answer"], comp, normalizer)
    if cfg.ensemble.snap_cutoff is not None:
        voted[:] = snap_to_vocab(voted.tolist(), normalizer.vocab, cfg.ensemble.snap_cutoff)
    c = cfg.data
    meta = {"method": method, "threshold": params["threshold"], "weights": params["weights"], "cv": cv,
            "members": sorted(oof["member"].unique()) + sorted(ext_weights), "config_hash": cfg.hash(),
            "experiment": cfg.experiment}  # fmt: skip
    path = write_submission(
        voted, comp.sample, cfg.submissions_dir, f"{cfg.experiment}-{name}", meta, c.id_col, c.answer_col
    )
    best = singles.index[0]
    single = vote(test[test["base"] == best][["id", "member", "answer", "logprob"]], "majority").set_index("id")[
        "answer"
    ]
    single_meta = {"method": "majority over folds", "cv": float(singles.iloc[0]), "members": [best],
                   "config_hash": cfg.hash(), "experiment": cfg.experiment}  # fmt: skip
    safe = best.replace("/", "-")
    single_path = write_submission(fill_empty(single, comp, normalizer), comp.sample, cfg.submissions_dir,
                                   f"{cfg.experiment}-{safe}", single_meta, c.id_col, c.answer_col)  # fmt: skip
    holdout = {} if truth is None else {p.name: holdout_score(p, truth, c) for p in (path, single_path)}
    return {"method": method, "threshold": params["threshold"], "weights": params["weights"], "cv": cv,
            "members": singles.to_dict(), "submission": path, "single": single_path,
            "holdout": holdout}  # fmt: skip


def read_solution(comp: Competition, normalizer: AnswerNormalizer) -> pd.Series | None:
    """Normalized held-out answers by ID from the data folder's solution.csv; None when there is none."""
    c = comp.cfg
    path = Path(c.root) / "solution.csv"
    if not path.is_file():
        return None
    sol = read_answers(path, c.id_col, c.answer_col)
    missing = ~comp.test[ID].isin(sol[ID])
    if missing.any():
        raise DataError(f"{path}: column '{c.id_col}': test ID '{comp.test[ID][missing].iloc[0]}' has no row")
    return pd.Series(normalizer(sol[ANSWER]).to_numpy(), index=sol[ID].to_numpy())


def holdout_score(submission: Path, truth: pd.Series, c: DataConfig) -> float:
    """Accuracy of a written submission against the held-out answers (`read_solution`)."""
    sub = read_submission(submission)
    return score(pd.DataFrame({"id": sub[c.id_col], "answer": sub[c.answer_col]}), truth)
