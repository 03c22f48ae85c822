"""Loading, validating and splitting a competition of the real size (400k questions, 119k images).

    python bench/load_400k.py [--train 359521] [--train-images 107231] [--test 40479] [--test-images 11915]

Tables and image files are generated from the CSV side only (empty image files: the lazy path
checks that each image exists; decoding is the `validate` command's full scan).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from competition.config import DataConfig
from competition.data import load_competition
from competition.folds import make_folds


def write_competition(root: Path, n_train: int, n_train_img: int, n_test: int, n_test_img: int) -> None:
    """Random tables of the given size and one empty file per image id."""
    rng = np.random.default_rng(0)
    answers = np.array(
        ["yes", "no", "2", "3", "red", "blue", "dog", "cat", "none", "0"] + [f"a{i}" for i in range(3000)]
    )
    p = 1.0 / np.arange(1, len(answers) + 1) ** 1.1
    for split, n, n_img in (("train", n_train, n_train_img), ("test", n_test, n_test_img)):
        (root / "image" / split).mkdir(parents=True)
        img = np.sort(rng.integers(0, n_img, n))
        df = pd.DataFrame(
            {
                "ID": [f"{split.upper()}_{i:06d}" for i in range(n)],
                "image_id": [f"{split}_{i:06d}" for i in img],
                "question": rng.choice(["What is in the image?", "How many dogs are there?", "Is it red?"], n),
            }
        )
        if split == "train":
            df["answer"] = rng.choice(answers, n, p=p / p.sum())
        else:
            df[["ID"]].assign(answer="yes").to_csv(root / "sample_submission.csv", index=False)
        df.to_csv(root / f"{split}.csv", index=False)
        for i in np.unique(img):
            (root / "image" / split / f"{split}_{i:06d}.png").touch()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=359_521)
    ap.add_argument("--train-images", type=int, default=107_231)
    ap.add_argument("--test", type=int, default=40_479)
    ap.add_argument("--test-images", type=int, default=11_915)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_competition(root, a.train, a.train_images, a.test, a.test_images)
        t0 = time.perf_counter()
        comp = load_competition(DataConfig(root=root))
        t1 = time.perf_counter()
        folds = make_folds(comp.train, k=5, seed=42, max_strata=64)
        t2 = time.perf_counter()
    n = len(comp.train) + len(comp.test)
    print(
        f"load+validate {n:,} questions, {len(comp.train_image_paths) + len(comp.test_image_paths):,} images: {t1 - t0:.2f} s"
    )
    print(
        f"5-fold StratifiedGroupKFold on {len(comp.train):,} questions: {t2 - t1:.2f} s "
        f"(fold sizes {folds['fold'].value_counts().sort_index().tolist()})"
    )


if __name__ == "__main__":
    main()
