"""Voting, weight fitting, method selection and external members on small hand-made frames."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rapidfuzz import fuzz

from competition.ensemble import (
    Candidate,
    fit_weights,
    load_external,
    score,
    select_method,
    vote,
)
from competition.errors import CompetitionError, ConfigError, DataError


def frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """A predictions frame from (id, member, answer, logprob) tuples."""
    return pd.DataFrame(rows, columns=["id", "member", "answer", "logprob"])


def one_question(answers: list[str], logprobs: list[float] | None = None, qid: str = "q1") -> pd.DataFrame:
    """One question answered by members m0, m1, ... in order."""
    logprobs = logprobs or [-1.0] * len(answers)
    return frame([(qid, f"m{i}", a, lp) for i, (a, lp) in enumerate(zip(answers, logprobs, strict=True))])


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
    preds = one_question(["red"])
    with pytest.raises(ConfigError, match="unknown method 'median'"):
        vote(preds, "median")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="member 'm0'"):
        vote(preds, "weighted", weights={"m0": -1.0})


def test_vote_refuses_a_missing_answer() -> None:
    preds = one_question(["red", "blue"])
    preds.loc[1, "answer"] = None
    with pytest.raises(DataError, match="row 1 has no 'answer'"):
        vote(preds, "majority")


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
    assert fit_weights(oof, gold) == weights  # deterministic


def test_score_is_exact_match_accuracy_and_needs_gold_for_every_id() -> None:
    voted = pd.DataFrame({"id": ["q1", "q2"], "answer": ["red", "Blue"]})
    assert score(voted, pd.Series({"q1": "red", "q2": "blue"})) == 0.5
    with pytest.raises(DataError, match="no answer for id 'q2'"):
        score(voted, pd.Series({"q1": "red"}))


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


def test_candidate_refuses_fitting_majority() -> None:
    with pytest.raises(ConfigError, match="majority uses unit weights"):
        Candidate("majority", fit=True)


def test_load_external_submission_csv(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    path.write_text("ID,answer\nTEST_0,none\nTEST_1,NA\nTEST_2,0\n")
    ext = load_external(path, "ext/public_notebook")
    assert ext.columns.tolist() == ["id", "member", "answer", "logprob"]
    assert ext["id"].tolist() == ["TEST_0", "TEST_1", "TEST_2"]
    assert ext["answer"].tolist() == ["none", "NA", "0"]
    assert (ext["member"] == "ext/public_notebook").all() and ext["logprob"].isna().all()


def test_load_external_llava_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "result.jsonl"
    path.write_text(
        '{"question_id": "TEST_0", "prompt": "Q", "text": "none", "answer_id": "x", "model_id": "llava"}\n'
        "\n"
        '{"question_id": 7, "text": "red"}\n'
    )
    ext = load_external(path, "ext/llava_seed")
    assert ext["id"].tolist() == ["TEST_0", "7"]
    assert ext["answer"].tolist() == ["none", "red"]
    assert ext["logprob"].isna().all()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("result.jsonl", '{"question_id": "a", "text": "x"}\n{"question_id": "b", "text": \n', r"line 2: invalid JSON"),
        ("result.jsonl", '{"question_id": "a"}\n', r"line 1: expected an object with 'question_id' and 'text'"),
        ("result.jsonl", '{"question_id": "a", "text": "x"}\n\n{"question_id": "a", "text": "y"}\n', r"line 3: dup"),
        ("result.jsonl", '{"question_id": "a", "text": null}\n', r"line 1, 'text': empty"),
        ("sub.csv", "ID,answer\nTEST_0,red\nTEST_1,red,extra\n", r"line 3"),
        ("sub.csv", "ID,answer\nTEST_0,red\nTEST_1,\n", r"line 3, column 'answer': empty"),
        ("sub.csv", "ID,prediction\nTEST_0,red\n", r"missing column 'answer'"),
    ],
)
def test_load_external_malformed_file_names_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CompetitionError, match=message) as err:
        load_external(path, "ext/bad")
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_load_external_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_external(tmp_path / "result.jsonl", "ext/x")
