"""Config: YAML + overrides, coercion, unknown keys and bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from competition.config import load_config, valid_keys
from competition.errors import ConfigError


def test_overrides_are_coerced_to_field_types(tmp_path: Path) -> None:
    cfg = load_config("configs/demo.yaml", ["folds.k=4", f"workdir={tmp_path}", "data.image_extensions=[.jpg, .png]"])
    assert cfg.folds.k == 4 and isinstance(cfg.folds.k, int)
    assert cfg.workdir == tmp_path
    assert cfg.data.image_extensions == [".jpg", ".png"]
    assert cfg.exp_dir == tmp_path / "experiments" / "demo"


def test_unknown_override_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'folds\.kk'.*folds\.k\b"):
        load_config("configs/demo.yaml", ["folds.kk=3"])


def test_unknown_key_in_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"data": {"rooot": "x"}}))
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'data\.rooot'"):
        load_config(p)


def test_bad_value_names_key() -> None:
    with pytest.raises(ConfigError, match=r"'folds\.k'"):
        load_config("configs/demo.yaml", ["folds.k=many"])
    with pytest.raises(ConfigError, match=r"'folds\.k'"):
        load_config("configs/demo.yaml", ["folds.k=1"])


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}", "seed=7"])
    path = cfg.save()
    again = load_config(path)
    assert again == cfg and again.hash() == cfg.hash()
    assert "data.root" in valid_keys() and "folds.k" in valid_keys()
