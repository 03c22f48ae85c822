"""Several reference answers per question (VQA v2 style): list columns, soft targets, votes under the metric, the
synthetic `vqa` kind. (credit('vqa', ...) against the official vqaEval is in tests/test_metric_reference.py.)"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from competition.classifier import (
    ClassifierCollator,
    ClassifierSet,
    answer_loss,
    soft_answer_loss,
    soft_scores,
    soft_targets,
)
from competition.config import DataConfig, load_config
from competition.data import ANSWER, ANSWERS, CHOICES, load_competition, most_frequent
from competition.dataset import IGNORE
from competition.errors import DataError
from competition.metrics import Gold, credit, majority_baseline, types_of
from competition.synthetic import ANNOTATORS, DISAGREE, generate
from competition.vote import fit_weights, score, select_ensemble, vote

# ---- 1. loading list columns ----------------------------------------------------------------------------------------

RED_PINK = ["red"] * 2 + ["pink"] * 8  # VQA's 10 annotators: 2 say red, 8 say pink


def write(path: Path, rows: list[dict[str, str]]) -> None:
    """A CSV of `rows` (header: the first row's keys), quoted as needed by the csv module."""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def competition(root: Path, train: list[dict[str, str]], test: list[dict[str, str]] | None = None, **cfg: str
                ) -> DataConfig:  # fmt: skip
    """A competition folder of these train (and test) rows, an empty .png per image id, a matching sample."""
    test = test or [{"ID": "Q0", "image_id": "x", "question": "What is it?"}]
    root.mkdir(parents=True, exist_ok=True)
    write(root / "train.csv", train)
    write(root / "test.csv", test)
    write(root / "sample_submission.csv", [{"ID": r["ID"], "answer": "yes"} for r in test])
    for split, rows in (("train", train), ("test", test)):
        (root / "image" / split).mkdir(parents=True, exist_ok=True)
        for r in rows:
            (root / "image" / split / f"{r['image_id']}.png").touch()
    return DataConfig(root=root, **cfg)


def rows(cells: list[str], col: str = "answers", answer: bool = False) -> list[dict[str, str]]:
    """Train rows T0, T1, ... with `col` holding each cell (and an `answer` column 'given' when asked)."""
    return [{"ID": f"T{i}", "image_id": f"i{i}", "question": "What colour?", **({"answer": "given"} if answer else {}),
             col: cell} for i, cell in enumerate(cells)]  # fmt: skip


def refused(cfg: DataConfig) -> str:
    """The one-line message load_competition refuses `cfg` with."""
    with pytest.raises(DataError) as e:
        load_competition(cfg)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_json_list_answers_load_as_tuples(tmp_path: Path) -> None:
    cells = [json.dumps(RED_PINK), json.dumps([" yes ", "no"]), "[2, 2, 3]"]
    comp = load_competition(competition(tmp_path, rows(cells, answer=True), answers_col="answers"))
    assert comp.train[ANSWERS].tolist() == [tuple(RED_PINK), ("yes", "no"), ("2", "2", "3")]  # stripped, as text
    assert comp.train[ANSWER].tolist() == ["given"] * 3  # a given answer column is kept, not recomputed
    assert comp.train.columns.tolist() == ["id", "image_id", "question", "answer", "answers"]
    assert ANSWERS not in comp.test


def test_separated_answers_load_like_json_lists(tmp_path: Path) -> None:
    piped = load_competition(competition(tmp_path / "a", rows(["red|red|pink", "yes | no"]),
                                         answers_col="answers", list_sep="|"))  # fmt: skip
    as_json = load_competition(competition(tmp_path / "b", rows([json.dumps(["red", "red", "pink"]), '["yes","no"]']),
                                           answers_col="answers"))  # fmt: skip
    assert piped.train[ANSWERS].tolist() == as_json.train[ANSWERS].tolist() == [("red", "red", "pink"), ("yes", "no")]
    assert piped.train[ANSWER].tolist() == as_json.train[ANSWER].tolist() == ["red", "yes"]


def test_list_columns_are_configured_by_load_config_overrides(tmp_path: Path) -> None:
    competition(tmp_path, rows(["a;b;b"], col="votes"))
    sets = [f"data.root={tmp_path}", "data.answers_col=votes", "data.list_sep=;"]
    comp = load_competition(load_config("configs/demo.yaml", sets).data)
    assert comp.train[ANSWERS].tolist() == [("a", "b", "b")] and comp.train[ANSWER].tolist() == ["b"]


def test_malformed_json_names_file_physical_line_and_users_column(tmp_path: Path) -> None:
    # row 0's list spans lines 2-3 (a quoted newline): data.py counts physical lines, so row 2 starts on line 5
    cells = ['["red",\n "pink"]', '["red"]', '["red", "pink"', '["blue"]']
    msg = refused(competition(tmp_path, rows(cells, col="all_answers"), answers_col="all_answers"))
    assert msg.startswith(f"{tmp_path / 'train.csv'}: line 5, column 'all_answers': not a JSON list ("), msg
    assert msg.endswith("; set data.list_sep for separated text"), msg


@pytest.mark.parametrize("cell", ["[]", '"red"', '[["red"]]', '["red", " "]', "{}"])
def test_a_cell_that_is_no_list_of_answers_is_refused(tmp_path: Path, cell: str) -> None:
    msg = refused(competition(tmp_path, rows(['["ok"]', cell]), answers_col="answers"))
    assert msg == f"{tmp_path / 'train.csv'}: line 3, column 'answers': expected a list of answers, got {cell!r}"


def test_most_frequent_breaks_ties_by_first_listed() -> None:
    assert most_frequent(tuple(RED_PINK)) == "pink"
    assert most_frequent(("blue", "red", "red", "blue")) == "blue"
    assert most_frequent(("red", "blue", "blue", "red")) == "red"
    assert most_frequent(("x",)) == "x"


def test_missing_answer_column_becomes_the_most_frequent_answer(tmp_path: Path) -> None:
    cells = [json.dumps(RED_PINK), '["blue", "red", "red", "blue"]', '["no"]']
    comp = load_competition(competition(tmp_path, rows(cells), answers_col="answers"))
    assert comp.train[ANSWER].tolist() == ["pink", "blue", "no"]


def test_missing_answer_column_without_answers_col_is_refused(tmp_path: Path) -> None:
    assert "missing column 'answer'" in refused(competition(tmp_path, rows(['["a"]'])))


def test_choices_load_for_train_and_test(tmp_path: Path) -> None:
    train = [{"ID": "T0", "image_id": "a", "question": "Which?", "answer": "B", "choices": '["A", "B", "C"]'}]
    test = [{"ID": "Q0", "image_id": "x", "question": "Which?", "choices": '["yes", "no"]'}]
    comp = load_competition(competition(tmp_path, train, test, choices_col="choices"))
    assert comp.train[CHOICES].tolist() == [("A", "B", "C")]
    assert comp.test[CHOICES].tolist() == [("yes", "no")]
    assert ANSWERS not in comp.train  # choices are not annotators' answers


def test_choices_column_missing_from_test_is_refused(tmp_path: Path) -> None:
    train = [{"ID": "T0", "image_id": "a", "question": "Which?", "answer": "B", "choices": '["A", "B"]'}]
    msg = refused(competition(tmp_path, train, choices_col="choices"))
    assert msg.startswith(f"{tmp_path / 'test.csv'}: missing column 'choices'")


def test_answers_col_naming_the_answer_column_gives_the_most_frequent_answer(tmp_path: Path) -> None:
    cfg = competition(tmp_path, rows([json.dumps(RED_PINK)], col="answer"), answers_col="answer")
    comp = load_competition(cfg)
    assert comp.train[ANSWER].tolist() == ["pink"]


def test_a_type_column_gives_the_per_type_tables_their_types(tmp_path: Path) -> None:
    train = [{"ID": f"T{i}", "image_id": f"i{i}", "question": "What colour?", "answer": a, "question_type": t}
             for i, (a, t) in enumerate([("red", "what color"), ("red", "what color"), ("2", "how many")])]  # fmt: skip
    comp = load_competition(competition(tmp_path, train, type_col="question_type"))
    assert types_of(comp.train).tolist() == ["what color", "what color", "how many"]
    assert types_of(comp.test).tolist() == ["what is"]  # test.csv has no such column: derived from its words
    assert majority_baseline(comp.train, comp.train).tolist() == ["red", "red", "2"]
    untyped = load_competition(competition(tmp_path / "plain", train))
    assert majority_baseline(untyped.train, untyped.train).tolist() == ["red", "red", "red"]


# ---- 2. soft targets ------------------------------------------------------------------------------------------------

INDEX = {"red": 0, "pink": 1, "blue": 2}


def test_soft_scores_are_min_1_count_over_3() -> None:
    pairs = soft_scores(tuple(RED_PINK), INDEX)
    assert dict(pairs) == pytest.approx({0: 2 / 3, 1: 1.0})
    assert soft_targets([pairs], 3)[0].tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    assert soft_scores(("red",), INDEX) == [(0, pytest.approx(1 / 3))]
    assert soft_scores(("green",) * 5, INDEX) == []  # an answer outside the head's list scores nothing


def logits_of(p: list[float]) -> torch.Tensor:
    """Logits whose sigmoid is p (clipped off 0 and 1)."""
    return torch.logit(torch.tensor([p]).clamp(0.02, 0.98))


def test_bce_loss_is_lower_for_the_soft_scores_than_for_the_one_hot_majority() -> None:
    target = soft_targets([soft_scores(tuple(RED_PINK), INDEX)], 3)
    soft, one_hot = logits_of([2 / 3, 1.0, 0.0]), logits_of([0.0, 1.0, 0.0])
    assert soft_answer_loss(soft, target, "bce") < soft_answer_loss(one_hot, target, "bce")
    assert answer_loss(soft, target, "bce") == soft_answer_loss(soft, target, "bce")  # 2-D labels: soft scores


def test_ce_loss_learns_the_normalized_share_and_skips_rows_of_no_known_answer() -> None:
    logits = torch.tensor([[0.5, 1.0, -1.0], [2.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[2 / 3, 1.0, 0.0], [0.0, 0.0, 0.0]])
    loss = answer_loss(logits, target, "ce")
    share = -(torch.tensor([0.4, 0.6, 0.0]) * logits[0].log_softmax(-1)).sum()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(share.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[1].abs().sum() == 0  # the unknown row adds no gradient


def test_ce_loss_of_a_batch_without_known_answers_is_zero_not_nan() -> None:
    logits = torch.randn(3, 4, requires_grad=True)
    loss = soft_answer_loss(logits, torch.zeros(3, 4), "ce")
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph: a training step runs
    assert torch.equal(logits.grad, torch.zeros(3, 4))


class Tokenizer:
    """One token per word (its length), pad id 0."""

    pad_token_id = 0

    def __call__(self, texts: list[str], **kw: object) -> dict[str, list[list[int]]]:
        return {"input_ids": [[len(w) for w in t.split()] for t in texts]}


class Processor:
    tokenizer = Tokenizer()


def images(ids: list[str]) -> torch.Tensor:
    return torch.zeros(len(ids), 3, 2, 2)


def test_classifier_set_and_collator_carry_soft_scores_when_the_rows_have_answers() -> None:
    table = pd.DataFrame({"image_id": ["a", "a", "b"], "question": ["What colour?", "Is it?", "What?"],
                          ANSWER: ["pink", "red", "green"],
                          ANSWERS: [tuple(RED_PINK), ("red",), ("green",) * 3]})  # fmt: skip
    data = ClassifierSet(Processor(), table, list(INDEX), max_length=8, pack=2)
    assert [item["labels"] for item in data.items] == [[soft_scores(tuple(RED_PINK), INDEX), [(0, 1 / 3)]], [[]]]
    batch = ClassifierCollator(images, Tokenizer(), n_answers=3)(data.items)
    torch.testing.assert_close(batch["labels"], torch.tensor([[2 / 3, 1.0, 0.0], [1 / 3, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    hard = ClassifierSet(Processor(), table.drop(columns=ANSWERS), list(INDEX), max_length=8, pack=2)
    labels = ClassifierCollator(images, Tokenizer(), n_answers=3)(hard.items)["labels"]
    assert labels.tolist() == [1, 0, IGNORE] and labels.dim() == 1


# ---- 3. votes under the metric ------------------------------------------------------------------------------------


def oof(n_split: int, n_agree: int) -> tuple[pd.DataFrame, Gold]:
    """`n_split` questions of gold 2 x red + 8 x pink where A and C answer red and B pink, then `n_agree` of gold
    10 x blue where A and C answer blue and B green; metric vqa."""
    preds, gold = [], {}
    for i in range(n_split):
        gold[f"s{i}"] = tuple(RED_PINK)
        preds += [(f"s{i}", "A", "red"), (f"s{i}", "B", "pink"), (f"s{i}", "C", "red")]
    for i in range(n_agree):
        gold[f"a{i}"] = ("blue",) * 10
        preds += [(f"a{i}", "A", "blue"), (f"a{i}", "B", "green"), (f"a{i}", "C", "blue")]
    frame = pd.DataFrame(preds, columns=["id", "member", "answer"]).assign(logprob=-1.0)
    return frame, Gold(pd.Series(gold), "vqa")


def test_vqa_credit_of_the_split_question() -> None:
    assert credit("vqa", ["pink", "red", "blue"], [tuple(RED_PINK)] * 3).tolist() == pytest.approx([1.0, 0.6, 0.0])


def test_weights_fitted_under_vqa_back_the_member_whose_answer_scores_more() -> None:
    preds, gold = oof(n_split=10, n_agree=2)  # pink: 10 x 1.0 = 10; red: 10 x 0.6 + 2 x 1.0 = 8
    majority = score(vote(preds, "majority", metric="vqa"), gold)
    assert majority == pytest.approx(8 / 12)
    weights = fit_weights(preds, gold)
    voted = vote(preds, "weighted", weights, metric="vqa")
    assert score(voted, gold) == pytest.approx(10 / 12)
    assert set(voted.loc[voted["id"].str.startswith("s"), "answer"]) == {"pink"}
    assert select_ensemble(preds, gold) == {"A": 0.0, "B": 1.0, "C": 0.0}


def test_partial_credit_keeps_the_majority_where_exact_match_would_overturn_it() -> None:
    preds, gold = oof(n_split=10, n_agree=5)  # red: 6 + 5 = 11 of 15 under vqa; pink: 10
    voted = vote(preds, "weighted", fit_weights(preds, gold), metric="vqa")
    assert score(voted, gold) == pytest.approx(11 / 15) == score(vote(preds, "majority"), gold)
    assert set(voted.loc[voted["id"].str.startswith("s"), "answer"]) == {"red"}
    exact = Gold(gold.answers.map(most_frequent), "exact")  # the same questions scored on their majority answer
    overturned = vote(preds, "weighted", fit_weights(preds, exact))
    assert set(overturned.loc[overturned["id"].str.startswith("s"), "answer"]) == {"pink"}


def near(answers: list[str], metric: str) -> str:
    """The voted answer of one question answered by m0, m1, m2 in order, m2 with weight 1.5."""
    preds = pd.DataFrame({"id": "q", "member": ["m0", "m1", "m2"], "answer": answers, "logprob": -1.0})
    voted = vote(preds, "weighted", {"m2": 1.5}, metric=metric)
    assert len(voted) == 1
    return voted["answer"].iloc[0]


@pytest.mark.parametrize(("metric", "pair", "other"), [("anls", ["helo world", "hello world"], "goodbye"),
                                                       ("relaxed", ["10.2", "10"], "50")])  # fmt: skip
def test_near_answers_support_each_other_under_a_near_credit_metric(metric: str, pair: list[str], other: str) -> None:
    assert credit(metric, [pair[0]], [(pair[1],)])[0] > 0.5  # near: each scores on the other as gold
    assert near([*pair, other], metric) in pair  # ~1.9 each against 1.5
    assert near([*pair, other], "exact") == other  # apart: 1 each against 1.5
    assert near([*pair, other], "vqa") == other  # vqa gives a different answer no credit


# ---- 4. the synthetic vqa kind --------------------------------------------------------------------------------------


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_vqa_kind_writes_annotators_answers_and_their_most_frequent(tmp_path: Path) -> None:
    counts = generate(tmp_path / "d", 20, 5, 2, seed=4, kind="vqa")
    train, test, solution = (read(tmp_path / "d" / f) for f in ("train.csv", "test.csv", "solution.csv"))
    assert counts["train"] == len(train) == 40 and len(test) == len(solution) == 10
    assert train.columns.tolist() == ["ID", "image_id", "question", "answer", "answers"]
    assert test.columns.tolist() == ["ID", "image_id", "question"]  # the test answers stay hidden
    assert solution.columns.tolist() == ["ID", "answer", "answers"] and solution["ID"].tolist() == test["ID"].tolist()
    for table in (train, solution):
        lists = table["answers"].map(lambda s: tuple(json.loads(s)))
        assert set(lists.map(len)) == {ANNOTATORS["vqa"]} == {10}
        assert table["answer"].tolist() == lists.map(most_frequent).tolist()


def test_vqa_kind_loads_with_the_demo_vqa_config(tmp_path: Path) -> None:
    generate(tmp_path / "d", 6, 2, 2, seed=0, kind="vqa")
    comp = load_competition(load_config("configs/demo_vqa.yaml", [f"data.root={tmp_path / 'd'}"]).data)
    assert comp.train[ANSWERS].map(len).eq(10).all()
    assert comp.train[ANSWER].tolist() == comp.train[ANSWERS].map(most_frequent).tolist()


def answer_type(answer: str) -> str:
    return "yes/no" if answer in ("yes", "no") else "number" if answer.isdigit() else "other"


def test_vqa_kind_disagrees_at_about_the_configured_rates(tmp_path: Path) -> None:
    generate(tmp_path / "d", 60, 10, 4, seed=0, kind="vqa")
    table = pd.concat([read(tmp_path / "d" / "train.csv"), read(tmp_path / "d" / "solution.csv")])
    lists = table["answers"].map(json.loads)
    off = [sum(x != a for x in answers) / len(answers) for a, answers in zip(table["answer"], lists, strict=True)]
    rates = pd.Series(off).groupby(table["answer"].map(answer_type).to_numpy()).mean()
    assert set(rates.index) == set(DISAGREE)
    for kind, rate in rates.items():  # loose: a miscounted 0 stays 0, and the majority is not always the truth
        assert DISAGREE[kind] / 2 <= rate <= DISAGREE[kind] + 0.1, (kind, rate)
    assert rates["yes/no"] < rates["number"] < rates["other"]


def test_vqa_kind_is_deterministic_by_seed(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(tmp_path / name, 8, 3, 2, seed=seed, kind="vqa")
    for f in ("train.csv", "solution.csv", "image/train/train_000003.png"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / "train.csv").read_bytes() != (tmp_path / "c" / "train.csv").read_bytes()
