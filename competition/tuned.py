"""experiments/<exp>/tuned.yaml: the best parameters of the Optuna studies, read by `train`, `predict` and `ensemble`.

    python -c "from competition.config import load_config; from competition.tuned import load_tuned; print(load_tuned(load_config('configs/demo.yaml')))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from competition.config import Config, DecodingConfig, TrainConfig, VoteMethod
from competition.errors import ConfigError
from competition.io import atomic_write_yaml, is_number
from competition.normalize import FUZZY_THRESHOLD
from competition.overrides import bad_value, check_keys, read_yaml
from competition.prompts import TEMPLATES
from competition.section import Section

SCORES = ("train_score", "decoding_score", "vote_score")  # each study's best value beside its section


class TunedVote(Section):
    """tuned.yaml's vote section: the vote study's best method, fuzzy threshold and member weights."""

    method: VoteMethod
    threshold: float = Field(FUZZY_THRESHOLD, ge=0, le=100)
    weights: dict[str, Annotated[float, Field(ge=0)]] | None = None


def tuned_path(cfg: Config) -> Path:
    """experiments/<exp>/tuned.yaml."""
    return cfg.exp_dir / "tuned.yaml"


def save_tuned(cfg: Config, section: dict[str, Any]) -> Path:
    """Merge a study's best parameters into tuned.yaml (sections of other studies are kept)."""
    path = tuned_path(cfg)
    atomic_write_yaml({**load_tuned(cfg), **section}, path)
    return path


def load_tuned(cfg: Config) -> dict[str, Any]:
    """The tuned parameters of the experiment ({} before any study); a ConfigError names the file and key of a
    hand edit that is not YAML, not a mapping, or has an unknown key or a bad value."""
    path = tuned_path(cfg)
    if not path.exists():
        return {}
    tuned = read_yaml(path, "tuned.yaml")
    if not isinstance(tuned, dict):
        raise ConfigError(f"{path}: expected a mapping of train, decoding, vote and their scores, got {tuned!r:.60}")
    return {key: checked_section(cfg, path, str(key), value) for key, value in tuned.items()}


def checked_section(cfg: Config, path: Path, key: str, value: Any) -> Any:
    """One top-level entry of tuned.yaml, validated (the vote section with its defaults filled in)."""
    if key in SCORES:
        if not is_number(value):
            raise ConfigError(f"{path}: bad value for '{key}': expected a number (got {value!r})")
        return value
    if key not in ("train", "decoding", "vote"):
        raise ConfigError(f"{path}: unknown key '{key}' (valid keys: train, decoding, vote, {', '.join(SCORES)})")
    if not isinstance(value, dict) and not (key == "train" and value is None):
        raise ConfigError(f"{path}: bad value for '{key}': expected a mapping (got {value!r:.60})")
    try:
        if key == "train":
            check_keys(value or {}, TrainConfig, "train.", str(path))
            with_train(cfg, value or {})
        elif key == "decoding":
            check_decoding(path, value)
        else:
            return TunedVote.model_validate(value).model_dump()
    except ValidationError as e:
        raise bad_value(e, str(path), "" if key == "train" else key) from None
    return value


def check_decoding(path: Path, d: dict[str, Any]) -> None:
    """Refuse a decoding section without a known prompt or with a key or value DecodingConfig refuses."""
    rest = {k: v for k, v in d.items() if k != "prompt"}
    if d.get("prompt") not in TEMPLATES:
        raise ConfigError(f"{path}: bad value for 'decoding.prompt': expected one of {', '.join(TEMPLATES)} "
                          f"(got {d.get('prompt')!r})")  # fmt: skip
    check_keys(rest, DecodingConfig, "decoding.", str(path))
    DecodingConfig(**rest)


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
