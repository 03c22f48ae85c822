"""The base of every config section and the experiment-name type (competition.config builds the whole config from them).

python -m competition folds -c configs/demo.yaml --set experiment=my_run
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


def _folder_name(name: str) -> str:
    """An experiment name is one folder under experiments/: never empty, '.', '..' or a path."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not name.strip("."):
        raise ValueError("not one folder name under experiments/ (letters, digits, '_', '.', '-'; not '.' or '..')")
    return name


ExperimentName = Annotated[str, AfterValidator(_folder_name)]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
