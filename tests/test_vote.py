"""Voting: majority, weighted, fuzzy and soft votes, fitted weights and the choice of a method on OOF."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from rapidfuzz import fuzz

import competition.vote as voting
from competition.errors import ConfigError, DataError
from competition.vote import (
    FUZZY_THRESHOLD,
    Candidate,
    candidate_weights,
    fit_weights,
    score,
    select_ensemble,
    select_method,
    vote,
)


def frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """A predictions frame from (id, member, answer, logprob) tuples."""
    return pd.DataFrame(rows, columns=["id", "member", "answer", "logprob"])


def one_question(answers: list[str], logprobs: list[float] | None = None, qid: str = "q1") -> pd.DataFrame:
    """One question answered by members m0, m1, ... in order."""
    logprobs = logprobs or [-1.0] * len(answers)
    return frame([(qid, f"m{i}", a, lp) for i, (a, lp) in enumerate(zip(answers, logprobs, strict=True))])


def refused(error: type[Exception], message: str, fn: Callable[..., object], *args: object, **kw: object) -> None:
    """`fn(*args, **kw)` raises `error` with exactly `message`."""
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        fn(*args, **kw)


def winner(preds: pd.DataFrame, method: str, **kw: object) -> str:
    """The voted answer of a one-question frame."""
    voted = vote(preds, method, **kw)
    assert len(voted) == 1
    return voted["answer"].iloc[0]


def test_majority_picks_most_common_per_question() -> None:
    preds = pd.concat([one_question(["red", "blue", "red", "green"]), one_question(["2", "3", "3"], qid="q2")])
    voted = vote(preds, "majority")
    assert voted["id"].tolist() == ["q1", "q2"]
    assert voted["answer"].tolist() == ["red", "3"]
    assert voted["support"].tolist() == pytest.approx([0.5, 2 / 3])
    assert voted["logprob"].tolist() == pytest.approx([-2.0, -2.0])


def test_majority_ignores_weights() -> None:
    preds = one_question(["red", "blue", "red"])
    assert winner(preds, "majority", weights={"m1": 10.0}) == "red"


def test_weighted_overturns_majority_with_a_heavy_member() -> None:
    preds = one_question(["red", "blue", "red", "red"])
    assert winner(preds, "weighted") == "red"
    voted = vote(preds, "weighted", weights={"m1": 5.0})
    assert voted["answer"].iloc[0] == "blue"
    assert voted["support"].iloc[0] == pytest.approx(5 / 8)


def test_fuzzy_cluster_beats_plain_majority_and_answers_best_spelling() -> None:
    preds = one_question(["blue", "bluee", "blue", "red", "red", "red"])
    assert winner(preds, "majority") == "red"
    voted = vote(preds, "fuzzy", threshold=85)
    assert voted["answer"].iloc[0] == "blue"
    assert voted["support"].iloc[0] == pytest.approx(0.5)
    assert voted["logprob"].iloc[0] == pytest.approx(-3.0)  # every voter of the cluster
    # the best-supported spelling, even when the misspelling carries more weight than each correct vote
    weighted = one_question(["bluee", "blue", "blue", "red", "red"])
    assert winner(weighted, "fuzzy", weights={"m0": 1.5}, threshold=85) == "blue"
    assert winner(weighted, "fuzzy", weights={"m0": 2.5}, threshold=85) == "bluee"


def test_fuzzy_threshold_keeps_dissimilar_answers_apart() -> None:
    preds = one_question(["blue", "bluee", "red", "red"])
    assert fuzz.ratio("blue", "bluee") < 90
    assert winner(preds, "fuzzy") == "red"  # default threshold 90: no merge, red wins 2 to 1
    assert winner(one_question(["2", "3", "3", "4"]), "fuzzy", threshold=50) == "3"


def test_fuzzy_clusters_only_within_a_question() -> None:
    preds = pd.concat([one_question(["blue", "red", "red"]), one_question(["bluee", "bluee", "x"], qid="q2")])
    voted = vote(preds, "fuzzy", threshold=85)
    assert voted["answer"].tolist() == ["red", "bluee"]


def test_ties_broken_by_logprob_then_weight_then_string() -> None:
    assert winner(one_question(["red", "blue"], [-2.0, -0.5]), "majority") == "blue"
    assert winner(one_question(["red", "blue"], [-0.5, -2.0]), "majority") == "red"
    # NaN log-probabilities rank below any number
    assert winner(one_question(["red", "blue"], [np.nan, -9.0]), "majority") == "blue"
    # equal weight and logprob: the answer whose single voter weighs most
    tied = one_question(["red", "red", "blue"], [-1.0, -1.0, -2.0])
    assert winner(tied, "weighted", weights={"m0": 1.0, "m1": 1.0, "m2": 2.0}) == "blue"
    # all equal: the smaller answer string
    assert winner(one_question(["red", "blue"]), "majority") == "blue"


def reference_vote(preds: pd.DataFrame, weights: dict[str, float], threshold: float | None) -> dict[str, str]:
    """A plain per-question vote; fuzzy clusters are connected components of fuzz.ratio >= threshold."""
    out = {}
    for qid, q in preds.groupby("id", sort=False):
        stats: dict[str, tuple[float, list[float], float]] = {}
        for member, answer, lp in q[["member", "answer", "logprob"]].itertuples(index=False):
            w, lps, top = stats.get(answer, (0.0, [], 0.0))
            m = weights.get(member, 1.0)
            stats[answer] = (w + m, lps if np.isnan(lp) else [*lps, lp], max(top, m))
        spelled = []
        for cluster in components(list(stats), threshold):
            spelling = best([(a, *stats[a]) for a in cluster])
            w, lps, top = zip(*(stats[a] for a in cluster), strict=True)
            spelled.append((spelling, sum(w), [x for lp in lps for x in lp], max(top)))
        out[qid] = best(spelled)
    return out


def components(answers: list[str], threshold: float | None) -> list[list[str]]:
    """Answers linked by fuzz.ratio >= threshold, transitively (each alone without a threshold)."""
    label = {a: a for a in answers}
    for a, b in itertools.combinations(answers, 2):
        if threshold is not None and fuzz.ratio(a, b) >= threshold:
            old = label[b]
            label = {k: label[a] if v == old else v for k, v in label.items()}
    return [[a for a in answers if label[a] == c] for c in dict.fromkeys(label.values())]


def best(items: list[tuple[str, float, list[float], float]]) -> str:
    """The answer of the best (answer, weight, logprobs, top) item: weight, summed logprob, top, smallest answer."""
    return min(items, key=lambda t: (-round(t[1], 9), -sum(t[2]) if t[2] else np.inf, -t[3], t[0]))[0]


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_vote_matches_a_plain_per_question_vote(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = ["blue", "bluee", "blu", "red", "rad", "2", "3", "none", "green", "greeen"]
    n, members = 200, [f"m{i}" for i in range(7)]
    preds = frame(
        [
            (f"q{i}", m, str(rng.choice(vocab[: 3 + i % 8])), float(rng.choice([-1.0, -2.0, np.nan])))
            for i in range(n)
            for m in members
            if rng.random() < 0.8
        ]
    )
    weights = {m: float(rng.choice([0.0, 0.5, 1.0, 2.0])) for m in members}
    for method, w, threshold in [("majority", {}, None), ("weighted", weights, None), ("fuzzy", weights, 75.0)]:
        voted = vote(preds, method, w or None, threshold or 90.0)
        assert dict(zip(voted["id"], voted["answer"], strict=True)) == reference_vote(preds, w, threshold), method


def test_vote_refuses_bad_method_and_weight() -> None:
    preds = one_question(["red", "blue"])
    refused(ConfigError, "ensemble: unknown method 'median' (valid: majority, weighted, fuzzy, soft)", vote, preds, "median")
    for bad in (-1.0, float("nan"), float("inf")):
        message = f"ensemble: weight of member 'm1' must be >= 0, got {bad}"
        refused(ConfigError, message, vote, preds, "weighted", weights={"m0": 1.0, "m1": bad})
    assert winner(preds, "weighted", weights={"m0": 0.0}) == "blue"  # zero is a weight


def test_vote_refuses_a_missing_value() -> None:
    for col, row in (("answer", 1), ("id", 0), ("member", 2)):
        preds = one_question(["red", "blue", "red"])
        preds.loc[row, col] = None
        refused(DataError, f"predictions: row {row} has no '{col}'", vote, preds, "majority")


def test_vote_answers_ids_in_first_seen_order() -> None:
    preds = frame([("q2", "m0", "a", -1.0), ("q10", "m0", "b", -1.0), ("q1", "m0", "c", -1.0), ("q2", "m1", "a", -1.0)])
    voted = vote(preds, "fuzzy")
    assert voted.columns.tolist() == ["id", "answer", "support", "logprob"]
    assert voted["id"].tolist() == ["q2", "q10", "q1"] and voted["answer"].tolist() == ["a", "b", "c"]
    agreed = vote(preds.assign(answer="yes"), "majority")  # one distinct answer over several ids
    assert agreed["id"].tolist() == ["q2", "q10", "q1"] and agreed["answer"].tolist() == ["yes"] * 3


def test_fuzzy_default_threshold_is_90() -> None:
    assert FUZZY_THRESHOLD == Candidate().threshold == 90.0
    assert fuzz.ratio("yellow", "yelow") == pytest.approx(90.909, abs=1e-3)
    assert fuzz.ratio("abcdefghij", "abcdefghix") == 90.0
    for right, wrong in (("yelow", "yellow"), ("abcdefghix", "abcdefghij")):
        preds = one_question([right, wrong, right, "a", "a"])  # apart: "a" wins the 2-2 tie on the smaller string
        assert winner(preds, "fuzzy") == right  # merged: 3 votes to 2, the spelling with 2 votes answers
        assert winner(preds, "fuzzy", threshold=90.95) == "a"


def test_logprob_sums_skip_nan_and_stay_nan_without_a_number() -> None:
    nan = float("nan")
    voted = vote(one_question(["red", "red", "blue"], [nan, -1.5, nan]), "majority")
    assert voted["answer"].item() == "red" and voted["logprob"].item() == -1.5
    assert np.isnan(vote(one_question(["red", "red", "blue"], [nan, nan, -1.0]), "majority")["logprob"].item())
    fuzzy = vote(one_question(["blue", "bluee", "red"], [nan, -2.0, -0.5]), "fuzzy", threshold=85)
    assert fuzzy["answer"].item() == "bluee" and fuzzy["logprob"].item() == -2.0
    fuzzy = vote(one_question(["blue", "bluee", "red"], [nan, nan, -0.5]), "fuzzy", threshold=85)
    assert fuzzy["answer"].item() == "blue" and np.isnan(fuzzy["logprob"].item())


def test_support_is_zero_when_every_weight_is_zero() -> None:
    voted = vote(one_question(["red", "blue"]), "weighted", {"m0": 0.0, "m1": 0.0})
    assert voted["answer"].item() == "blue" and voted["support"].item() == 0.0


def test_weight_sums_equal_up_to_rounding_tie() -> None:
    preds = one_question(["red", "red", "blue"], [-5.0, -5.0, -1.0])
    assert winner(preds, "weighted", weights={"m0": 0.1, "m1": 0.2, "m2": 0.3}) == "blue"  # 0.1 + 0.2 ties 0.3


def test_vote_of_no_predictions_is_empty() -> None:
    assert vote(frame([]), "fuzzy").columns.tolist() == ["id", "answer", "support", "logprob"]
    assert vote(frame([]), "fuzzy").empty


def generated_oof(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """One strong member (90% right) and four noisy ones (35% right) whose errors often agree."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"a{i}" for i in range(6)])
    ids = [f"q{i}" for i in range(n)]
    gold = pd.Series(rng.choice(vocab, n), index=ids)
    decoy = rng.choice(vocab, n)  # the shared wrong answer of the noisy members
    rows = []
    for member, p_right in [("strong", 0.9), ("n1", 0.35), ("n2", 0.35), ("n3", 0.35), ("n4", 0.35)]:
        right = rng.random(n) < p_right
        answers = np.where(right, gold.to_numpy(), np.where(rng.random(n) < 0.7, decoy, rng.choice(vocab, n)))
        rows += [(i, member, a, -1.0) for i, a in zip(ids, answers, strict=True)]
    return frame(rows), gold


def test_fit_weights_favours_the_accurate_member_and_beats_majority() -> None:
    oof, gold = generated_oof()
    weights = fit_weights(oof, gold)
    assert set(weights) == {"strong", "n1", "n2", "n3", "n4"}
    assert all(weights["strong"] > weights[m] for m in ("n1", "n2", "n3", "n4"))
    majority = score(vote(oof, "majority"), gold)
    weighted = score(vote(oof, "weighted", weights), gold)
    assert weighted >= majority
    assert weighted >= 0.85 > majority
    assert weights == {"n1": 0.0, "n2": 0.12, "n3": 0.0, "n4": 0.45, "strong": 0.93}  # deterministic


def spy_accuracy(monkeypatch: pytest.MonkeyPatch, fake: Callable[[np.ndarray], float] | None = None) -> list[list]:
    """Record every weight vector fit_weights scores (scored by `fake` when given, else for real)."""
    calls: list[list] = []
    real = voting._accuracy

    def accuracy(b: object, weight: np.ndarray, correct: np.ndarray) -> float:
        calls.append(weight.tolist())
        return fake(weight) if fake else real(b, weight, correct)  # type: ignore[arg-type]

    monkeypatch.setattr(voting, "_accuracy", accuracy)
    return calls


def test_fit_weights_stops_after_a_quiet_first_round(monkeypatch: pytest.MonkeyPatch) -> None:
    # member a is right on q0, q1 and wins every tie on logprob; b is right on q2 only: 2/3 is the best vote
    rows = [("q0", "a", "x", -1.0), ("q1", "a", "x", -1.0), ("q2", "a", "x", -1.0)]
    rows += [("q0", "b", "y", -5.0), ("q1", "b", "y", -5.0), ("q2", "b", "y", -5.0)]
    gold = pd.Series({"q0": "x", "q1": "x", "q2": "y"})
    calls = spy_accuracy(monkeypatch)
    assert fit_weights(frame(rows), gold) == {"a": 0.666667, "b": 0.333333}
    a, b = 2 / 3, 1 / 3
    tried = [[f * a, b] for f in (0.0, 0.25, 0.5, 2.0, 4.0)] + [[a, f * b] for f in (0.0, 0.25, 0.5, 2.0, 4.0)]
    assert np.array(calls).shape == (11, 2) and np.allclose(calls, [[a, b], *tried])


def test_fit_weights_keeps_improvements_for_at_most_three_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_accuracy(monkeypatch, fake=lambda w: float(len(calls)))  # every trial beats the last one
    weights = fit_weights(one_question(["red", "blue"], qid="q0"), pd.Series({"q0": "red"}))
    assert weights == {"m0": 4.0, "m1": 0.0}  # m0 ends on its last trial, its start (accuracy 1) x 4; m1 starts at 0
    # m0's trials each round: its start x each factor but the one it holds as the round begins (1, then 4, 4)
    assert len(calls) == 1 + 5 + 5 + 5


def soft(rows: list[tuple[str, str, str, float, list[tuple[str, float]]]]) -> pd.DataFrame:
    """A predictions frame with alternatives from (id, member, answer, logprob, alternatives) tuples."""
    return pd.DataFrame(rows, columns=["id", "member", "answer", "logprob", "alternatives"])


def test_soft_vote_adds_up_probabilities_alternatives_included() -> None:
    ln = np.log
    preds = soft([("q1", "m0", "red", ln(0.5), [("blue", ln(0.45))]), ("q1", "m1", "green", ln(0.5), [("blue", ln(0.45))]),
                  ("q1", "m2", "red", ln(0.4), [("blue", ln(0.35))])])  # fmt: skip
    assert winner(preds, "majority") == "red"  # two first choices
    voted = vote(preds, "soft")
    assert voted["answer"].iloc[0] == "blue"  # 1.25 of probability against red's 0.9
    assert voted["support"].iloc[0] == pytest.approx(1.25 / 2.65)
    assert winner(preds, "soft", weights={"m1": 0.0}) == "red"  # without m1: 0.9 against 0.8
    without = preds.assign(logprob=[np.nan, ln(0.5), ln(0.4)], alternatives=[[], [("blue", ln(0.45))], []])
    assert winner(without, "soft") == "red"  # a member without log-probabilities gives its answer a whole vote
    assert winner(preds.drop(columns="alternatives"), "soft") == "red"


def test_fitted_soft_vote_finds_the_answer_every_member_has_in_mind() -> None:
    """Three members, each right first 45% of the time and otherwise holding the gold answer second: the soft vote
    finds it where a hard vote only sees three different first choices."""
    rng = np.random.default_rng(0)
    n, decoys = 400, [f"d{k}" for k in range(12)]
    ids = [f"q{i}" for i in range(n)]
    gold = pd.Series(rng.choice(["a", "b", "c"], n), index=ids)
    rows = []
    for m in ("m0", "m1", "m2"):
        first = rng.random(n) < 0.45
        wrong = rng.choice(decoys, n)
        rows += [(i, m, g if f else w, np.log(0.5), [(w if f else g, np.log(0.4))])
                 for i, g, f, w in zip(ids, gold, first, wrong, strict=True)]  # fmt: skip
    oof = soft(rows)
    weights = fit_weights(oof, gold, "soft")
    hard = score(vote(oof, "weighted", fit_weights(oof, gold)), gold)
    assert score(vote(oof, "soft", weights), gold) > 0.95 > 0.8 > hard


def test_score_is_exact_match_accuracy_and_needs_gold_for_every_id() -> None:
    voted = pd.DataFrame({"id": ["q1", "q2"], "answer": ["red", "Blue"]})
    assert score(voted, pd.Series({"q1": "red", "q2": "blue"})) == 0.5
    refused(DataError, "gold answers: no answer for id 'q2'", score, voted, pd.Series({"q1": "red"}))
    assert score(voted.iloc[:0], pd.Series({"q1": "red"})) == 0.0


def test_select_method_picks_by_oof() -> None:
    oof, gold = generated_oof()
    method, params, oof_score = select_method(oof, gold, [Candidate("majority"), Candidate("weighted", fit=True)])
    assert method == "weighted"
    assert params["weights"]["strong"] > params["weights"]["n1"]
    assert oof_score == pytest.approx(score(vote(oof, method, **params), gold))
    assert oof_score > score(vote(oof, "majority"), gold)
    # misspelled votes of the truth: only the fuzzy candidate recovers it
    spelled, truth = generated_misspellings()
    method, params, oof_score = select_method(spelled, truth, [Candidate("majority"), Candidate("fuzzy", 85.0)])
    assert (method, params["threshold"], oof_score) == ("fuzzy", 85.0, 1.0)


def generated_misspellings() -> tuple[pd.DataFrame, pd.Series]:
    """Each question: the truth twice, a misspelling of it twice, and a wrong answer three times."""
    ids = [f"q{i}" for i in range(20)]
    answers = ["yellow", "yelow", "yellow", "yelow", "green", "green", "green"]
    return frame([(i, f"m{k}", a, -1.0) for i in ids for k, a in enumerate(answers)]), pd.Series("yellow", ids)


def test_select_method_keeps_the_first_candidate_on_ties_and_needs_one() -> None:
    oof, gold = generated_oof()
    tied = [Candidate("weighted"), Candidate("majority")]  # unit weights: the same vote
    assert select_method(oof, gold, tied)[:2] == ("weighted", {"threshold": 90.0, "weights": None})
    assert select_method(oof, gold, tied[::-1])[0] == "majority"
    refused(ConfigError, "ensemble: no candidate voting method to select from", select_method, oof, gold, [])


def test_candidate_refuses_fitting_majority_and_an_unknown_method() -> None:
    message = "ensemble: majority uses unit weights; fit weights with 'weighted' or 'fuzzy'"
    refused(ConfigError, message, Candidate, "majority", fit=True)
    refused(ConfigError, "ensemble: unknown method 'mean' (valid: majority, weighted, fuzzy, soft)", Candidate, "mean")


def test_ensemble_selection_adds_members_with_replacement_and_leaves_out_the_useless() -> None:
    """A strong member (70% right), two weaker ones (60%) wrong on other questions, and one always wrong: the greedy
    bag beats its best member, leaves the always-wrong member out, and can count a member twice."""
    rng = np.random.default_rng(1)
    n = 600
    ids = [f"q{i}" for i in range(n)]
    gold = pd.Series(rng.choice(["a", "b"], n), index=ids)
    rows = []
    for m, p in (("strong", 0.7), ("w1", 0.6), ("w2", 0.6), ("noise", 0.0)):
        right = rng.random(n) < p
        rows += [(i, m, g if r else f"x{rng.integers(3)}", -1.0) for i, g, r in zip(ids, gold, right, strict=True)]
    oof = frame(rows)
    weights = select_ensemble(oof, gold)
    assert weights["noise"] == 0 and weights["strong"] >= 1
    assert sum(weights.values()) >= 2 and all(float(w).is_integer() for w in weights.values())
    best_single = max(score(vote(oof[oof["member"] == m], "majority"), gold) for m in ("strong", "w1", "w2"))
    assert score(vote(oof, "weighted", weights), gold) > best_single + 0.03
    assert candidate_weights(Candidate("weighted", select=True), oof, gold) == weights
    assert candidate_weights(Candidate("weighted"), oof, gold) is None
    refused(ConfigError, "ensemble: majority uses unit weights; fit weights with 'weighted' or 'fuzzy'", Candidate,
            "majority", select=True)
