"""Majority, weighted and fuzzy votes over a test set of the real size (40,000 questions x 30 members).

    python bench/vote_speed.py [--questions 40000] [--threshold 90] [--repeat 3]

Members are 5 folds x 3 prompts x 2 decodings, each right 45-85% of the time; a wrong answer is a
Zipf-distributed pick from ~300 answers (often the question's shared confusion) and 5% of all answers
are misspelled (a letter dropped, doubled or swapped), so fuzzy clustering has real work to do.
Each time is the best of `--repeat` votes, so a busy machine distorts it less.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from competition.vote import vote

WORDS = [
    "red", "blue", "green", "yellow", "white", "black", "brown", "orange", "purple", "pink", "gray",
    "dog", "cat", "horse", "bird", "car", "bus", "train", "truck", "person", "man", "woman", "child",
    "table", "chair", "tree", "grass", "sky", "water", "building", "street", "left", "right", "center",
]  # fmt: skip


def vocabulary(n_extra: int, rng: np.random.Generator) -> np.ndarray:
    """Common VQA answers: yes/no, counts, words, and two-word phrases up to a few hundred."""
    phrases = [f"{a} {b}" for a in WORDS[:11] for b in WORDS[11:]]
    extra = rng.choice(phrases, n_extra, replace=False).tolist()
    return np.array(["yes", "no", "none"] + [str(i) for i in range(21)] + WORDS + extra, dtype=object)


def misspell(word: str, rng: np.random.Generator) -> str:
    """One typo: a letter dropped, doubled or swapped with the next."""
    if len(word) < 3:
        return word + word[-1]
    i = int(rng.integers(0, len(word) - 1))
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return word[:i] + word[i + 1 :]
    if kind == 1:
        return word[: i + 1] + word[i:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def predictions(n_questions: int, seed: int = 0) -> tuple[pd.DataFrame, dict[str, float]]:
    """Long predictions frame (id, member, answer, logprob) and a weight per member."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(250, rng)
    typos = np.array([[misspell(w, rng) for _ in range(3)] for w in vocab], dtype=object)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    gold = rng.choice(len(vocab), n_questions, p=p / p.sum())
    confusion = rng.choice(len(vocab), n_questions, p=p / p.sum())
    members = [f"fold{k}/prompt{j}/{d}" for k in range(5) for j in range(3) for d in ("greedy", "beam")]
    ids = np.array([f"TEST_{i:06d}" for i in range(n_questions)], dtype=object)
    parts = []
    for member, accuracy in zip(members, rng.uniform(0.45, 0.85, len(members)), strict=True):
        right = rng.random(n_questions) < accuracy
        wrong = np.where(rng.random(n_questions) < 0.6, confusion, rng.choice(len(vocab), n_questions, p=p / p.sum()))
        code = np.where(right, gold, wrong)
        answer = np.where(rng.random(n_questions) < 0.05, typos[code, rng.integers(0, 3, n_questions)], vocab[code])
        logprob = np.where(right, -rng.exponential(0.3, n_questions), -rng.exponential(1.5, n_questions))
        parts.append(pd.DataFrame({"id": ids, "member": member, "answer": answer, "logprob": logprob}))
    weights = {m: round(float(w), 3) for m, w in zip(members, rng.uniform(0.5, 2.0, len(members)), strict=True)}
    return pd.concat(parts, ignore_index=True), weights


def timed(preds: pd.DataFrame, method: str, weights: dict[str, float], threshold: float, repeat: int) -> float:
    """Seconds the fastest of `repeat` votes takes."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        vote(preds, method, weights, threshold)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=40_000)
    ap.add_argument("--threshold", type=float, default=90.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    preds, weights = predictions(a.questions)
    n_members = preds["member"].nunique()
    times = {m: timed(preds, m, weights, a.threshold, a.repeat) for m in ("majority", "weighted", "fuzzy")}
    print(
        " | ".join(f"{m} {t:.2f} s" for m, t in times.items())
        + f" ({a.questions:,} questions x {n_members} members, {preds['answer'].nunique():,} distinct answers,"
        f" best of {a.repeat})"
    )


if __name__ == "__main__":
    main()
