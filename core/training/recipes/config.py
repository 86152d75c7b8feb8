"""One network's training run: the settings every recipe shares, and a nested section of the
network's own options (its recipe's ``Options`` dataclass).

A ``configs/*.json`` file keeps one flat JSON object per network (``"common"`` applies to all):
its keys are split into the shared fields below and the network's options; a key that is an
option of another network is an error naming both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from core.errors import TrainConfigError
from core.training.recipes import RECIPE_MODULES, recipe_class
from core.training.run_schedule import RunSchedule


@dataclass(frozen=True, kw_only=True)
class TrainConfig(RunSchedule):
    """One network's training run (a section of a ``configs/*.json`` file); the shared run
    settings (batch size, lr, iterations, logging, seed, threads, ``init_from``) are
    :class:`RunSchedule`'s."""

    network: str  # a key of RECIPE_MODULES: halo | init | ref | kpts
    data: dict  # see core.training.datasets.dataset_from_spec
    options: Any  # the network's own options: recipe_class(network).Options
    backbone: str = "resnet18"
    points_per_hand: int = 4096  # query points per hand (K reads keypoints only)
    lr_step: int = 0  # StepLR step (iterations); 0 = constant learning rate
    lr_gamma: float = 1.0
    num_workers: int = 0
    # init_from (RunSchedule): an earlier stage's exported weights, relative to --out.
    # An encoder exported by the encoder campaign (python main.py train encoder; relative to
    # --out): I, R and K are built around its stored config and start from its weights,
    # instead of a fresh ResNetSimple on ``backbone`` (ours; issue 13).
    encoder_from: str | None = None
    # encoder_from is a fine-tuned copy of the encoder inside init_from (a GPU sprint adapts the
    # shipped encoder): every weight of init_from carries over, the image path included, and
    # only the encoder is swapped. Off, a new encoder restarts the image path (its old
    # weights read another encoder's maps). Ours.
    encoder_tuned_from_init: bool = False

    def __post_init__(self) -> None:
        if self.encoder_tuned_from_init and not (self.encoder_from and self.init_from):
            raise TrainConfigError("encoder_tuned_from_init needs both encoder_from and init_from")
        options_class = recipe_class(self.network).Options
        if not isinstance(self.options, options_class):
            raise TrainConfigError(
                f"options of network {self.network} must be a {options_class.__name__}, "
                f"got {type(self.options).__name__}"
            )
        super().__post_init__()

    @classmethod
    def from_sections(cls, sections: dict, network: str, overrides: dict | None = None) -> TrainConfig:
        """``{"common": {...}, "<network>": {...}}`` -> the merged config of ``network``."""
        if network not in RECIPE_MODULES:
            raise TrainConfigError(f"network must be one of {sorted(RECIPE_MODULES)}, got {network!r}")
        if network not in sections:
            raise TrainConfigError(f"the training config has no section {network!r}")
        merged = {**sections.get("common", {}), **sections[network], **(overrides or {})}
        if "data" not in merged:
            raise TrainConfigError("the training config needs a 'data' block")
        shared = {f.name for f in dataclasses.fields(cls)} - {"network", "options"}
        options_class = recipe_class(network).Options
        own = {f.name for f in dataclasses.fields(options_class)}
        _reject_foreign_keys(network, set(merged) - shared - own)
        options = options_class(**{k: v for k, v in merged.items() if k in own})
        return cls(network=network, options=options, **{k: v for k, v in merged.items() if k in shared})

    @classmethod
    def of(cls, network: str, **keys) -> TrainConfig:
        """A config from one flat section, as in a JSON file (tests, scripts)."""
        return cls.from_sections({network: keys}, network)

    def flat(self) -> dict[str, Any]:
        """The config as one flat JSON-able section (what checkpoints record)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        return {**out, **dataclasses.asdict(self.options)}


def _reject_foreign_keys(network: str, keys: set[str]) -> None:
    if not keys:
        return
    owners = {}
    for other in RECIPE_MODULES:
        if other != network:
            for f in dataclasses.fields(recipe_class(other).Options):
                owners.setdefault(f.name, []).append(other)
    problems = [
        f"{k} (an option of {' and '.join(owners[k])}, not of {network})" if k in owners else k
        for k in sorted(keys)
    ]
    raise TrainConfigError(f"unknown training config key(s) for network {network}: {', '.join(problems)}")
