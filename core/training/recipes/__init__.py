"""The training recipes, one module per network (see :mod:`.base` for what a recipe does).

:data:`RECIPE_MODULES` is the registry: a training config's network name (the section of a
``configs/*.json`` file and the ``train`` command's argument) -> the module under this package
that defines ``RECIPE`` (a :class:`~core.training.recipes.base.Recipe` subclass whose
``Options`` dataclass holds that network's own config keys). Adding a network is one entry
here plus its module. Nothing heavy is imported until a recipe is asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from core.errors import TrainConfigError

RECIPE_MODULES = {"kpts": "kpts", "init": "init", "ref": "ref", "halo": "halo"}


def recipe_class(network: str):
    """The recipe class of training-config network ``network``."""
    if network not in RECIPE_MODULES:
        raise TrainConfigError(f"network must be one of {sorted(RECIPE_MODULES)}, got {network!r}")
    return importlib.import_module(f"{__name__}.{RECIPE_MODULES[network]}").RECIPE


def make_recipe(cfg, out_dir: str | Path):
    """The recipe that trains ``cfg`` (a :class:`~core.training.recipes.config.TrainConfig`)."""
    return recipe_class(cfg.network)(cfg, Path(out_dir))
