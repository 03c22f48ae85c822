"""experiments/<exp>/tuned.yaml: the best parameters of the Optuna studies, read by `train`, `predict` and `ensemble`.

    python -c "from competition.config import load_config; from competition.tuned import load_tuned; print(load_tuned(load_config('configs/demo.yaml')))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from competition.config import Config, DecodingConfig
from competition.io import atomic_write_yaml


def tuned_path(cfg: Config) -> Path:
    """experiments/<exp>/tuned.yaml."""
    return cfg.exp_dir / "tuned.yaml"


def save_tuned(cfg: Config, section: dict[str, Any]) -> Path:
    """Merge a study's best parameters into tuned.yaml (sections of other studies are kept)."""
    path = tuned_path(cfg)
    current = yaml.safe_load(path.read_text()) if path.exists() else {}
    current.update(section)
    atomic_write_yaml(current, path)
    return path


def load_tuned(cfg: Config) -> dict[str, Any]:
    """The tuned parameters of the experiment ({} before any study)."""
    path = tuned_path(cfg)
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def with_train(cfg: Config, params: dict[str, Any], **top: Any) -> Config:
    """The config with `params` set in its train section (and `top` at its top level)."""
    raw = cfg.to_dict()
    raw["train"].update(params)
    return Config.model_validate({**raw, **top})


def tuned_train(cfg: Config) -> tuple[Config, dict[str, Any]]:
    """The config with the training study's best parameters from tuned.yaml, and those parameters ({}: none)."""
    params = load_tuned(cfg).get("train") or {}
    return (with_train(cfg, params), params) if params else (cfg, {})


def tuned_job(cfg: Config) -> tuple[str, DecodingConfig] | None:
    """The tuned (prompt, decoding) pair that `predict` runs beside the configured ones; None without one, or when
    it decodes as a configured pair does (the study chose greedy, say): its answers would only repeat that member's."""
    d = load_tuned(cfg).get("decoding")
    if not d:
        return None
    d = dict(d)
    prompt, decoding = d.pop("prompt"), DecodingConfig(**d)
    params = decoding.model_dump(exclude={"name"})
    repeats = prompt in cfg.predict.prompts and any(c.model_dump(exclude={"name"}) == params for c in cfg.predict.decodings)
    return None if repeats else (prompt, decoding)
