"""The config keys with their defaults and descriptions: the README's key table, and the `config` command's
listing of a config's current values.

    make docs                                        # rewrites the table between the README's config-keys markers
    python -m competition config -c configs/demo.yaml   # every key, its value and what it means
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from competition.config import Config
from competition.section import Section


def _sections(ann: Any) -> type[Section] | None:
    """The Section class a field holds, directly or as the items of a list."""
    item = (getattr(ann, "__args__", None) or [None])[0] if getattr(ann, "__origin__", None) is list else ann
    return item if isinstance(item, type) and issubclass(item, Section) else None


def _default_text(field: Any) -> str:
    """A field's default as the key table shows it."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, BaseModel) or (isinstance(value, list) and value and isinstance(value[0], BaseModel)):
        return "see below"
    return f"`{json.dumps(value, default=str)}`"


def key_table(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Rows `| key | default | meaning |` of every config key, from the fields' defaults and descriptions."""
    rows = []
    for name, field in model.model_fields.items():
        section = _sections(field.annotation)
        is_list = getattr(field.annotation, "__origin__", None) is list
        if section is None or is_list:
            rows.append(f"| `{prefix}{name}` | {_default_text(field)} | {field.description or ''} |")
        if section is not None:
            rows += key_table(section, f"{prefix}{name}{'[]' if is_list else ''}.")
    return rows


def key_values(cfg: BaseModel, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, current value, description) of every key of a config, sections walked (lists of sections as values)."""
    rows = []
    for name, field in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            rows += key_values(value, f"{prefix}{name}.")
            continue
        shown = [v.model_dump(mode="json") for v in value] if isinstance(value, list) and value and isinstance(
            value[0], BaseModel) else value  # fmt: skip
        rows.append((f"{prefix}{name}", json.dumps(shown, default=str), field.description or ""))
    return rows
