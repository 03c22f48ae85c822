"""A config's text: the YAML file and the `--set a.b=c` overrides on top of it, before validation.

python -m competition train -c configs/demo.yaml --set train.epochs=4 --set "predict.prompts=[plain]"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from competition.errors import ConfigError


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


def apply_overrides(raw: dict[str, Any], overrides: list[str], model: type[BaseModel] | None = None) -> dict[str, Any]:
    """Set each dotted key of `overrides` in the nested dict `raw` (a copy is returned). A key inside a dict-valued
    field of `model` that the file leaves out changes one entry of the field's default, not the whole dict; a mapping
    set on a section of `model` changes the keys it names, not the whole section."""
    out = json.loads(json.dumps(raw, default=str))
    for item in overrides:
        path, value = parse_override(item)
        node, section = out, model
        for part in path[:-1]:
            field = section.model_fields.get(part) if section else None
            if not isinstance(node.get(part), dict):
                default = field.get_default(call_default_factory=True) if field else None
                node[part] = json.loads(json.dumps(default)) if isinstance(default, dict) else {}
            section = section_type(section, part)
            node = node[part]
        node[path[-1]] = merged(node.get(path[-1]), value, section_type(section, path[-1]))
    return out


def section_type(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    """The section (model class) that field `name` of `model` holds; None for any other field."""
    field = model.model_fields.get(name) if model else None
    ann = field.annotation if field else None
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def merged(current: Any, value: Any, section: type[BaseModel] | None) -> Any:
    """`value` set on a field holding `current`: a mapping set on a section merges into it key by key (nested
    sections too); anything else replaces it."""
    if section is None or not isinstance(value, dict) or not isinstance(current, dict):
        return value
    return {**current, **{k: merged(current.get(k), v, section_type(section, k)) for k, v in value.items()}}


def read_yaml(path: Path, what: str = "a config") -> Any:
    """A YAML file's content; a ConfigError with line and column when it is not text or not YAML."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start}); {what} is YAML text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        hint = ", YAML indents with spaces, never tabs" if "'\\t'" in problem else ""
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}{f' {context}' if context else ''}{hint}") from None


def valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key a config model accepts, e.g. 'data.root', 'folds.k' of Config."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += valid_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def check_keys(raw: dict[str, Any], model: type[BaseModel], prefix: str, source: str) -> None:
    """Refuse unknown keys anywhere in `raw`, naming the key and the valid ones."""
    for key, value in raw.items():
        field = model.model_fields.get(key)
        if field is None:
            valid = ", ".join(valid_keys(model, prefix))
            raise ConfigError(f"{source}: unknown config key '{prefix}{key}' (valid keys: {valid})")
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(value, dict):
            check_keys(value, ann, f"{prefix}{key}.", source)


def bad_value(e: ValidationError, source: str, section: str = "") -> ConfigError:
    """A validation's first error as one line naming `source` and the dotted key (under `section`)."""
    errors = e.errors()
    key = dotted_key(section, errors[0]["loc"])
    msgs = dict.fromkeys(x["msg"].removeprefix("Value error, ") for x in errors if dotted_key(section, x["loc"]) == key)
    return ConfigError(f"{source}: bad value for '{key}': {' or '.join(msgs)} (got {errors[0].get('input')!r})")


def dotted_key(section: str, loc: tuple[Any, ...]) -> str:
    """The config key of a validation error's location, without the union branches pydantic names in it
    ('constrained-int', "literal['data']"), which are not keys."""
    return ".".join(str(p) for p in (section, *loc) if p != "" and not (isinstance(p, str) and not p.isidentifier()))
