"""The ensemble stage: gather members, choose the vote on OOF, vote the test set, write submissions.

    python -m competition ensemble -c configs/demo.yaml [--name NAME]

Members are (prompt, decoding) prediction sets of this experiment and of those named in
ensemble.experiments (same folds); on OOF each question is answered by its own fold's model, on test
by every fold's model, so a member's fitted weight applies to all its folds. The blend is chosen on
OOF and scored by nested CV (competition.blend). Writes the ensemble and each experiment's best single
member as submissions, ranked on the leaderboard; with a solution.csv (held-out answers: the demo
generator writes one) in the data folder, each carries its held-out accuracy too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from competition.blend import Blend, apply_blend, choose_blend, nested_cv
from competition.config import Config, top_k
from competition.cv import plot_added, plot_members
from competition.data import ANSWER, ANSWERS, ID, Competition, parse_lists, read_answers
from competition.errors import ConfigError, DataError
from competition.external import load_external
from competition.metrics import Gold, gold_cells, majority_baseline, types_of
from competition.normalize import AnswerNormalizer, snap_to_vocab
from competition.predictions import expected_ids, experiment_of, member_rows, oof_frame
from competition.submit import SAFE_NAME, check_one_competition, read_sidecar, write_submission
from competition.tuned import load_tuned
from competition.vote import VOTE_COLUMNS, Candidate, score, vote, vote_rows


def candidates(cfg: Config) -> list[Candidate]:
    """Voting configurations to score on OOF, from the config."""
    e = cfg.ensemble
    out: list[Candidate] = []
    for m in e.methods:
        if m == "majority":
            out.append(Candidate("majority"))
        elif m in ("weighted", "soft"):
            out += [Candidate(m)] if m == "soft" else []  # unit weights: the plain average of the members' probabilities
            out += [Candidate(m, fit=True), Candidate(m, select=True)]
            out += [Candidate(m, fit=True, by_type=True)] if e.per_type else []
        else:
            out += [Candidate("fuzzy", t, fit=f) for t in e.thresholds for f in (False, True)]
    return out


def test_frame(cfg: Config, normalizer: AnswerNormalizer, expected: dict[int, set[str]] | None = None) -> pd.DataFrame:
    """All folds' test rows of every member as vote input: id, member (fold/prompt/decoding), base (prompt/decoding),
    answer, logprob; `expected` (fold -> ids) checks each file's questions."""
    rows = member_rows(cfg, normalizer, "test", expected)
    rows["base"] = rows["prompt"] + "/" + rows["decoding"]
    rows["member"] = "fold" + rows["fold"].astype(str) + "/" + rows["base"]
    return rows


def question_type_of(comp: Competition) -> pd.Series:
    """The question type of every train and test id."""
    both = pd.concat([comp.train, comp.test], ignore_index=True)
    return pd.Series(types_of(both).to_numpy(), index=both[ID].to_numpy())


def externals(cfg: Config) -> tuple[pd.DataFrame, dict[str, float]]:
    """External members' rows (normalized like ours) and their given weights."""
    frames, given = [], {}
    for ext in cfg.ensemble.external:
        member = f"ext/{ext.name}"
        frames.append(load_external(ext.path, member, cfg.data.id_col, cfg.data.answer_col))
        given[member] = ext.weight
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=VOTE_COLUMNS)), given


def with_externals(blend: Blend, given: dict[str, float], members: list[str]) -> Blend:
    """The blend with external members at their given weights (a majority vote becomes a weighted one)."""
    if not given:
        return blend
    weights = {**(blend.weights or dict.fromkeys(members, 1.0)), **given}
    by_type = {t: {**w, **given} for t, w in blend.by_type.items()}
    method = "weighted" if blend.method == "majority" else blend.method
    return replace(blend, method=method, weights=weights, by_type=by_type)


def fill_empty(answers: pd.Series, comp: Competition, normalizer: AnswerNormalizer) -> pd.Series:
    """Empty answers (a model that said nothing) become the question type's most common training answer."""
    empty = answers.astype(str).str.strip() == ""
    if empty.any():
        test = comp.test.set_index(ID).loc[answers.index[empty]].reset_index()
        guess = majority_baseline(comp.train, test)
        answers = answers.copy()
        answers[empty.to_numpy()] = normalizer(guess).to_numpy()
    return answers


def choose(cfg: Config, oof: pd.DataFrame, gold: Gold, qtype: pd.Series, folds: pd.DataFrame
           ) -> tuple[Blend, float, float]:  # fmt: skip
    """(blend, CV, in-sample OOF accuracy): the candidates' best blend on all OOF, scored by nested CV. While only one
    fold has OOF predictions nothing can be nested: everything is in-sample, and the vote study's tuned blend (fitted
    on all OOF, so it has no nested score) ships when it beats the chosen one there."""
    cands, stack = candidates(cfg), cfg.ensemble.stack and not cfg.ensemble.external  # externals only join votes
    blend, in_sample = choose_blend(oof, gold, qtype, cands, stack)
    nested = nested_cv(oof, gold, qtype, folds.set_index(ID)["fold"], cands, stack)
    if nested is not None:
        return blend, nested, in_sample
    tuned = load_tuned(cfg).get("vote")
    if tuned:
        study = Blend(tuned["method"], tuned["threshold"], tuned["weights"], metric=cfg.metric)
        study_score = score(apply_blend(study, oof, qtype), gold)
        if study_score > in_sample:
            return study, study_score, study_score
    return blend, in_sample, in_sample


def added_by_experiment(cfg: Config, oof: pd.DataFrame, gold: Gold, qtype: pd.Series, folds: pd.DataFrame,
                        cv: float) -> dict[str, float]:  # fmt: skip
    """Per experiment whose members the blend holds: its nested CV minus that of the blend chosen and scored again
    without them (what the experiment adds); empty with one experiment or folds too few to nest."""
    owners = oof["member"].map(experiment_of)
    if owners.nunique() < 2:
        return {}
    cands, stack = candidates(cfg), cfg.ensemble.stack and not cfg.ensemble.external
    fold_of = folds.set_index(ID)["fold"]
    without = {owner or cfg.experiment: nested_cv(oof[owners != owner], gold, qtype, fold_of, cands, stack)
               for owner in sorted(owners.unique())}  # fmt: skip
    return {name: round(cv - score, 6) for name, score in without.items() if score is not None}


def lean_blend(cfg: Config, oof: pd.DataFrame, gold: Gold, qtype: pd.Series, folds: pd.DataFrame
               ) -> tuple[pd.DataFrame, tuple[Blend, float, float], dict[str, float], list[str]]:  # fmt: skip
    """(the OOF rows kept, choose()'s blend of them, what each kept experiment adds, the experiments dropped): while
    `ensemble.drop_subtracting` and an experiment takes away from the blend's nested CV, the worst one's members
    leave and the blend is chosen again."""
    chosen = choose(cfg, oof, gold, qtype, folds)
    added, dropped = added_by_experiment(cfg, oof, gold, qtype, folds, chosen[1]), []
    while cfg.ensemble.drop_subtracting and added and min(added.values()) < 0:
        worst = min(added, key=added.get)
        dropped.append(worst)
        oof = oof[oof["member"].map(experiment_of).replace("", cfg.experiment) != worst]
        chosen = choose(cfg, oof, gold, qtype, folds)
        added = added_by_experiment(cfg, oof, gold, qtype, folds, chosen[1])
    return oof, chosen, added, dropped


def run_ensemble(cfg: Config, comp: Competition, folds: pd.DataFrame, name: str = "ensemble") -> dict[str, Any]:
    """Choose the blend on OOF (scored by nested CV), vote the test set, write the ensemble and best-member
    submissions."""
    if not SAFE_NAME.fullmatch(name):
        raise ConfigError(f"--name '{name}': expected a file name of letters, digits, '.', '_', '-' (a letter or digit first)")
    check_one_competition(cfg.submissions_dir, competition_of(cfg))
    oof, qtype, normalizer = oof_frame(cfg, comp, folds), question_type_of(comp), AnswerNormalizer.of(cfg, comp)
    gold = Gold.of_frame(oof, cfg.metric)
    singles = oof.groupby("member")["correct"].mean().sort_values(ascending=False, kind="stable")
    truth = read_solution(comp, normalizer, cfg.metric)  # a bad solution.csv stops the stage before anything is written
    plot_members(oof, cfg.exp_dir / "members.png")  # every member of the blend, of every experiment
    oof, (blend, cv, in_sample), added, dropped = lean_blend(cfg, oof, gold, qtype, folds)
    test = test_frame(cfg, normalizer, expected_ids(comp, folds, "test"))
    if added:
        plot_added(added, cfg.exp_dir / "blend.png")
    ext_rows, ext_weights = externals(cfg)
    ext_rows[ANSWER] = normalizer(ext_rows[ANSWER].astype(str)).to_numpy()
    voters = test[test["base"].isin(set(oof["member"]))]  # the dropped experiments' members do not vote
    final = with_externals(blend, ext_weights, sorted(voters["base"].unique()))
    votes = pd.concat([vote_rows(voters.assign(member=voters["base"])), ext_rows[VOTE_COLUMNS]], ignore_index=True)
    voted = fill_empty(apply_blend(final, votes, qtype).set_index(ID)[ANSWER], comp, normalizer)
    if cfg.ensemble.snap_cutoff is not None:
        voted[:] = snap_to_vocab(voted.tolist(), normalizer.vocab, cfg.ensemble.snap_cutoff)
    meta = {**final.params(), "cv": cv, "cv_in_sample": in_sample, "members": sorted(singles.index) + sorted(ext_weights),
            "config_hash": cfg.hash(), "experiment": cfg.experiment, "held_out": held_out(voted, truth),
            "added": added, "dropped": dropped, "competition": competition_of(cfg)}  # fmt: skip
    path = write_submission(voted, comp.sample, cfg.submissions_dir, f"{cfg.experiment}-{name}", meta,
                            **submission_format(cfg))  # fmt: skip
    best = [write_member(cfg, comp, normalizer, test, m, float(singles[m]), truth) for m in best_per_experiment(singles)]
    holdout = {} if truth is None else {p.name: read_sidecar(p.with_suffix(".json"))["held_out"] for p in (path, *best)}
    return {**final.params(), "cv": cv, "cv_in_sample": in_sample, "members": singles.to_dict(), "submission": path,
            "single": best[0], "holdout": holdout, "added": added, "dropped": dropped}  # fmt: skip


def best_per_experiment(singles: pd.Series) -> list[str]:
    """The best member of each experiment (another's members read '<experiment>:<prompt>/<decoding>'), best first;
    `singles` is OOF accuracy by member, best first."""
    return singles.groupby([experiment_of(m) for m in singles.index], sort=False).head(1).index.tolist()


def write_member(cfg: Config, comp: Competition, normalizer: AnswerNormalizer, test: pd.DataFrame, member: str,
                 cv: float, truth: pd.Series | None) -> Path:  # fmt: skip
    """One member's test answers (majority over its fold models; MAP@k: their answers and alternatives ranked by
    summed probability, as its OOF is scored) as a submission ranked by its OOF accuracy."""
    method = "soft" if top_k(cfg.metric) > 1 else "majority"
    single = vote(vote_rows(test[test["base"] == member]), method, metric=cfg.metric).set_index(ID)[ANSWER]
    single = fill_empty(single, comp, normalizer)
    meta = {"method": f"{method} over folds", "cv": cv, "members": [member], "config_hash": cfg.hash(),
            "experiment": cfg.experiment, "held_out": held_out(single, truth), "competition": competition_of(cfg)}  # fmt: skip
    own = experiment_of(member) or cfg.experiment  # another experiment's member is named after that experiment
    name = f"{own}-{member.split(':')[-1].replace('/', '-')}"
    return write_submission(single, comp.sample, cfg.submissions_dir, name, meta, **submission_format(cfg))


def competition_of(cfg: Config) -> str:
    """What a submission's local CV is comparable within: the data folder and the metric."""
    return f"{cfg.data.root} scored by {cfg.metric}"


def submission_format(cfg: Config) -> dict[str, Any]:
    """write_submission's columns, ranked answers per row (MAP@k) and VQA results file, from the config."""
    c = cfg.data
    return {"id_col": c.id_col, "answer_col": c.answer_col, "top_k": top_k(cfg.metric),
            "results": c.submission_format == "vqa_json"}  # fmt: skip


def held_out(answers: pd.Series, truth: Gold | None) -> float | None:
    """Score of answers (by ID) against the held-out answers; None without a solution.csv."""
    return None if truth is None else score(pd.DataFrame({ID: answers.index, ANSWER: answers.to_numpy()}), truth)


def read_solution(comp: Competition, normalizer: AnswerNormalizer, metric: str) -> Gold | None:
    """Normalized held-out answers by ID from the data folder's solution.csv (its answers_col where the config names
    one), scored by `metric`; None when there is none."""
    c = comp.cfg
    path = Path(c.root) / "solution.csv"
    if not path.is_file():
        return None
    sol = read_answers(path, c.id_col, c.answers_col or c.answer_col)
    if c.answers_col:
        sol = sol.drop(columns=ANSWER).assign(**{ANSWERS: parse_lists(sol.rename(columns={ANSWER: c.answers_col}),
                                                                        path, c.answers_col, c.list_sep)})  # fmt: skip
    missing = ~comp.test[ID].isin(sol[ID])
    if missing.any():
        raise DataError(f"{path}: column '{c.id_col}': test ID '{comp.test[ID][missing].iloc[0]}' has no row")
    return Gold(pd.Series(gold_cells(sol, normalizer), index=sol[ID].to_numpy()), metric)


def summary_lines(res: dict[str, Any]) -> list[str]:
    """What the ensemble stage tells the user: the vote, its nested CV against its best member, held-out accuracy
    where a solution is known, the file written, and which submission to ship."""
    best = max(res["members"].values())
    typed = " with weights per question type" if res["weights_by_type"] else ""
    lines = [f"vote: {res['method']}{typed} (threshold {res['threshold']}), CV {res['cv']:.4f} (nested; "
             f"{res['cv_in_sample']:.4f} on the OOF it was fitted on); best single member {best:.4f}",
             *(f"held-out accuracy of {file}: {acc:.4f}" for file, acc in res["holdout"].items()),
             *(f"{name} adds {gain:+.4f} to the blend's nested CV" for name, gain in res["added"].items()),
             *(f"{name} took away from the blend's nested CV: left out" for name in res["dropped"]),
             f"wrote {res['submission']}"]  # fmt: skip
    if res["cv"] <= best:
        lines.append(f"the vote does not beat its best member on OOF: ship {res['single'].name}")
    return lines
