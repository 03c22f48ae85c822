"""The tiny LLaVA learns what is in the picture: per question type, well above the majority answer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from competition.config import DecodingConfig, load_config
from competition.data import load_competition
from competition.engine import Engine
from competition.folds import fold_rows, read_folds, write_folds
from competition.images import Images, ImageTransform
from competition.metrics import majority_baseline, question_types
from competition.modeling import load_trained
from competition.synthetic import generate
from competition.train import train_fold


@pytest.mark.train(minutes=4)
def test_tiny_llava_beats_the_per_type_majority_answer(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate(root, train_images=1500, test_images=5, seed=7)
    cfg = load_config(
        "configs/demo.yaml",
        [f"data.root={root}", f"workdir={tmp_path}", "train.max_steps=700", "train.save_steps=10000",
         "train.eval_steps=0"],
    )
    comp = load_competition(cfg.data)
    write_folds(cfg, comp.train)
    folds = read_folds(cfg)
    train_fold(cfg, comp, folds, 0, log=lambda s: None)
    model, processor = load_trained(cfg.fold_dir(0) / "model", cfg.model)
    train, val = fold_rows(comp, folds, 0, "train"), fold_rows(comp, folds, 0, "val")
    images = Images(comp, "train", ImageTransform(processor, cfg.model.image_aspect_ratio), cache=True)
    engine = Engine(model, processor, images, batch_size=64)
    got = {
        r: t
        for b in engine.answer("short_answer", DecodingConfig(), val["question"].tolist(), val["image_id"].tolist())
        for r, t, *_ in b
    }
    df = pd.DataFrame(
        {
            "qtype": question_types(val["question"]),
            "gold": val["answer"],
            "model": [got[i] for i in range(len(val))],
            "baseline": majority_baseline(train, val),
        }
    )
    acc = (
        df.assign(model=df["model"] == df["gold"], baseline=df["baseline"] == df["gold"])
        .groupby("qtype")[["model", "baseline"]]
        .mean()
    )
    print(acc)
    total_model, total_base = (df["model"] == df["gold"]).mean(), (df["baseline"] == df["gold"]).mean()
    assert total_model >= total_base + 0.15, (total_model, total_base)
    assert acc.loc["how many", "model"] >= acc.loc["how many", "baseline"] + 0.2
    assert acc.loc["what", "model"] >= acc.loc["what", "baseline"] + 0.1  # it sees what the objects are
    assert acc.loc["where is the", "model"] >= acc.loc["where is the", "baseline"] + 0.15  # and where they are
