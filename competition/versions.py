"""Installed libraries against the versions the package declares, checked when a command starts.

    python -c "from competition.versions import check_versions; check_versions()"
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement

from competition.errors import ConfigError


def check_versions(package: str = "competition") -> None:
    """A ConfigError naming the first declared dependency whose installed version falls outside its range."""
    for text in metadata.requires(package) or []:
        req = Requirement(text)
        if req.marker is not None:  # extras (dev, gpu, postgres) are optional
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            raise ConfigError(f"{req.name} is not installed; this toolkit needs {req} (pip install '{req}')") from None
        if not req.specifier.contains(installed, prereleases=True):
            raise ConfigError(f"{req.name} {installed} is installed; this toolkit needs {req} (pip install -U '{req}')")


def tell_deepspeed_the_device() -> None:
    """On a machine without CUDA, name DeepSpeed's device (it is imported by accelerate's and transformers' helpers
    when installed, and guesses the CPU with a warning on every command otherwise)."""
    import importlib.util
    import os

    if importlib.util.find_spec("deepspeed") is not None:
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
