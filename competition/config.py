"""Typed run configuration: YAML file + `--set a.b=c` overrides, unknown keys refused.

python -m competition folds -c configs/demo.yaml --set folds.k=3 --set workdir=/tmp/run
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from competition.errors import ConfigError
from competition.io import atomic_write_yaml


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class DataConfig(Section):
    """Where the competition files are and what their columns are called."""

    root: Path = Field(Path("data/demo"), description="competition folder")
    train_csv: str = Field("train.csv", description="training table, relative to root")
    test_csv: str = Field("test.csv", description="test table, relative to root")
    sample_submission_csv: str = Field("sample_submission.csv", description="sample submission, relative to root")
    train_images: str = Field("image/train", description="training image folder, relative to root")
    test_images: str = Field("image/test", description="test image folder, relative to root")
    id_col: str = "ID"
    image_col: str = "image_id"
    question_col: str = "question"
    answer_col: str = "answer"
    image_extensions: list[str] = Field(
        [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"], description="extensions tried when resolving an image id"
    )


class FoldsConfig(Section):
    """Grouped, answer-stratified K-fold split."""

    k: int = Field(5, ge=2, le=50, description="number of folds")
    seed: int | None = Field(None, description="split seed; defaults to the run seed")
    max_strata: int = Field(
        64, ge=2, description="most frequent answers kept as their own stratum; the rest share one bucket"
    )


class Config(Section):
    """The whole run: one YAML file."""

    experiment: str = Field(
        "demo", pattern=r"^[A-Za-z0-9_.-]+$", description="experiment name (folder under experiments/)"
    )
    workdir: Path = Field(Path("."), description="experiments/ and submissions/ are created under it")
    seed: int = 42
    data: DataConfig = DataConfig()
    folds: FoldsConfig = FoldsConfig()

    @property
    def exp_dir(self) -> Path:
        """experiments/<experiment> under the workdir."""
        return self.workdir / "experiments" / self.experiment

    @property
    def submissions_dir(self) -> Path:
        """submissions/ under the workdir."""
        return self.workdir / "submissions"

    def fold_dir(self, fold: int) -> Path:
        """experiments/<experiment>/fold<k>."""
        return self.exp_dir / f"fold{fold}"

    @property
    def split_seed(self) -> int:
        """The folds' seed, falling back to the run seed."""
        return self.seed if self.folds.seed is None else self.folds.seed

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe dict of the resolved config."""
        return json.loads(self.model_dump_json())

    def hash(self) -> str:
        """Short, stable hash of the resolved config."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def save(self) -> Path:
        """Write the resolved config to experiments/<exp>/config.yaml."""
        path = self.exp_dir / "config.yaml"
        atomic_write_yaml(self.to_dict(), path)
        return path


def valid_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts, e.g. 'data.root', 'folds.k'."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            keys += valid_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _check_keys(raw: dict[str, Any], model: type[BaseModel], prefix: str, source: str) -> None:
    """Refuse unknown keys anywhere in `raw`, naming the key and the valid ones."""
    for key, value in raw.items():
        field = model.model_fields.get(key)
        if field is None:
            valid = ", ".join(valid_keys(model, prefix))
            raise ConfigError(f"{source}: unknown config key '{prefix}{key}' (valid keys: {valid})")
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Section) and isinstance(value, dict):
            _check_keys(value, ann, f"{prefix}{key}.", source)


def parse_override(item: str) -> tuple[list[str], Any]:
    """'a.b=c' -> (['a', 'b'], c) with c parsed as a YAML scalar (int, float, bool, list...)."""
    if "=" not in item:
        raise ConfigError(f"--set '{item}': expected key=value")
    key, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key of `overrides` in the nested dict `raw` (a copy is returned)."""
    out = json.loads(json.dumps(raw, default=str))
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config, apply overrides, validate; ConfigError names the offending key."""
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}".splitlines()[0]) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    _check_keys(raw, Config, "", source)
    if overrides:
        raw = apply_overrides(raw, overrides)
        _check_keys(raw, Config, "", "--set")
        source = f"{source} with --set"
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{source}: bad value for '{key}': {err['msg']} (got {err.get('input')!r})") from None
