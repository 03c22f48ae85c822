"""Local CV: score every fold's out-of-fold predictions per prompt x decoding and question type.

    python -m competition cv -c configs/demo.yaml

Writes experiments/<exp>/cv.json, cv.md, cv.png and members.png (how often members agree; the oracle is the
share of questions some member gets right). Ground truth is normalized by the same rules
as the predictions; the baseline is the most common training answer of each question type (the VQA v2
types, see competition.metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from competition.config import Config
from competition.data import ANSWER, ID, Competition
from competition.folds import fold_rows
from competition.io import atomic_open, atomic_write_json, atomic_write_text, markdown_table
from competition.metrics import credit, gold_cells, majority_baseline, types_of
from competition.normalize import AnswerNormalizer
from competition.predictions import oof_frame

BASELINE_STYLE = {"color": "0.6", "hatch": "//", "edgecolor": "0.2"}  # cv.png: hatched grey; no member colour is grey
_TAB10_GREY = 7  # the index of tab10's one grey



def baseline_frame(cfg: Config, comp: Competition, folds: pd.DataFrame) -> pd.DataFrame:
    """Per OOF question: the majority answer of its type in its fold's training part, and whether it is right."""

    out, norm = [], AnswerNormalizer.of(cfg, comp)
    for f in sorted(folds["fold"].unique()):
        train, val = fold_rows(comp, folds, f, "train"), fold_rows(comp, folds, f, "val")
        right = credit(cfg.metric, norm(majority_baseline(train, val).reset_index(drop=True)), gold_cells(val, norm))
        out.append(pd.DataFrame({ID: val[ID], "qtype": types_of(val), "correct": right}))
    return pd.concat(out, ignore_index=True)


def cv_tables(df: pd.DataFrame, base: pd.DataFrame) -> dict[str, Any]:
    """Accuracy per member, per fold x member, per question type x member (with the baseline)."""
    covered = base[ID].isin(df[ID])
    members = (
        df.groupby("member")
        .agg(n=("correct", "size"), accuracy=("correct", "mean"), exact=("exact", "mean"))
        .sort_values("accuracy", ascending=False)
        .reset_index()
    )
    per_fold = df.groupby(["fold", "member"]).agg(n=("correct", "size"), accuracy=("correct", "mean")).reset_index()
    per_type = df.pivot_table(index="qtype", columns="member", values="correct", aggfunc="mean")
    per_type.insert(0, "baseline", base[covered].groupby("qtype")["correct"].mean())
    per_type.insert(0, "n", base[covered].groupby("qtype").size())
    return {
        "baseline": float(base[covered]["correct"].mean()),
        "oracle": float(df.groupby(ID)["correct"].max().mean()),
        "agreement": agreement(df).round(4).reset_index().to_dict("records"),
        "best": members.iloc[0].to_dict(),
        "members": members.to_dict("records"),
        "per_fold": per_fold.to_dict("records"),
        "per_type": per_type.reset_index().to_dict("records"),
    }


def agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Member x member: the share of OOF questions both answer the same way."""
    answers = df.pivot_table(index=ID, columns="member", values=ANSWER, aggfunc="first")
    names = list(answers.columns)
    same = [[float((answers[a] == answers[b]).mean()) for b in names] for a in names]
    return pd.DataFrame(same, index=pd.Index(names, name="member"), columns=names)


def plot_agreement(tables: dict[str, Any], path: Path) -> None:
    """members.png: how often each pair of members gives the same answer (low: they have something to combine), on
    a colour scale from the least agreeing pair to 1, each cell labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = pd.DataFrame(tables["agreement"]).set_index("member")
    values = m.to_numpy(float)
    low = float(values[~np.eye(len(m), dtype=bool)].min()) if len(m) > 1 else 0.0
    side = max(4, 0.6 * len(m) + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(values, vmin=np.floor(low * 20) / 20, vmax=1, cmap="viridis")
    for (i, j), v in np.ndenumerate(values):
        if len(m) <= 16:
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < (low + 1) / 2 else "black")
    ax.set_xticks(range(len(m)), m.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(m)), m.index, fontsize=7)
    ax.set_title(f"Share of identical OOF answers, {len(m)} members\n(oracle, some member right: {tables['oracle']:.3f})",
                 fontsize=9)  # fmt: skip
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def plot_members(oof: pd.DataFrame, path: Path) -> None:
    """members.png of an OOF frame (id, member, answer, correct): the agreement of its members and their oracle."""
    plot_agreement({"agreement": agreement(oof).round(4).reset_index().to_dict("records"),
                    "oracle": float(oof.groupby(ID)["correct"].max().mean())}, path)  # fmt: skip


def plot_added(added: dict[str, float], path: Path) -> None:
    """blend.png: what each experiment adds to the blend's nested CV, one bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(added, key=added.__getitem__)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.4))
    ax.barh(names, [added[n] for n in names], color=["tab:green" if added[n] > 0 else "tab:red" for n in names])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("blend's nested CV minus the nested CV of the blend chosen without the experiment", fontsize=8)
    ax.set_title("What each experiment adds to the blend", fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def markdown(tables: dict[str, Any]) -> str:
    """cv.md: the three tables as markdown."""
    md = {k: markdown_table(pd.DataFrame(tables[k])) for k in ("members", "per_type", "per_fold")}
    return (
        f"# Local CV\n\nBaseline (majority answer per question type): {tables['baseline']:.4f}\n\n"
        f"Oracle (some member right): {tables['oracle']:.4f}\n\n"
        f"## Members\n\n{md['members']}\n## Per question type\n\n{md['per_type']}\n## Per fold\n\n{md['per_fold']}"
    )


def member_colors(n: int) -> list[str]:
    """n distinct colours, none of them grey: tab10 less its grey, or viridis steps for more than nine."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    qualitative = [to_hex(c) for i, c in enumerate(colormaps["tab10"].colors) if i != _TAB10_GREY]
    return qualitative[:n] if n <= len(qualitative) else [to_hex(colormaps["viridis"](i / (n - 1))) for i in range(n)]


def plot(tables: dict[str, Any], path: Path) -> None:
    """cv.png: accuracy per question type for each member, next to the baseline (hatched grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_type = pd.DataFrame(tables["per_type"]).set_index("qtype").drop(columns="n")
    members = [c for c in per_type.columns if c != "baseline"]
    colors = [BASELINE_STYLE["color"], *member_colors(len(members))]
    ax = per_type[["baseline", *members]].plot.bar(
        figsize=(max(6, 1.2 * len(per_type)), 4), rot=30, width=0.8, color=colors
    )
    for bar in ax.containers[0]:
        bar.set(hatch=BASELINE_STYLE["hatch"], edgecolor=BASELINE_STYLE["edgecolor"])
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Out-of-fold accuracy per question type")
    ax.legend(fontsize=7)
    plt.tight_layout()
    with atomic_open(path, "wb") as f:
        plt.savefig(f, format="png", dpi=100)
    plt.close()


def run_cv(cfg: Config, comp: Competition, folds: pd.DataFrame) -> dict[str, Any]:
    """Score, then write cv.json / cv.md / cv.png; returns the tables."""
    tables = cv_tables(oof_frame(cfg, comp, folds), baseline_frame(cfg, comp, folds))
    atomic_write_json(tables, cfg.exp_dir / "cv.json")
    atomic_write_text(cfg.exp_dir / "cv.md", markdown(tables))
    plot(tables, cfg.exp_dir / "cv.png")
    plot_agreement(tables, cfg.exp_dir / "members.png")
    return tables
