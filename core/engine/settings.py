"""Settings of one reconstruction (plain data; the defaults follow the reference)."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, replace

from core.errors import InputError

DEVICES = ("auto", "cpu", "cuda")
MAX_RESOLUTION = 512  # per axis; 1024 would need gigabytes per hand and many minutes
_BOOLS = ("use_keypoint_refiner", "use_refinement", "half_precision", "penetration", "resolve_contact",
          "closed_form_ref")  # fmt: skip
_INTS = ("resolution", "preview_resolution", "mise_resolution0", "anchor_resolution", "num_anchors",
         "anchor_seed", "refinement_resolution", "points_per_batch")  # fmt: skip
_FLOATS = ("threshold_init", "threshold_ref", "box_padding", "skip_margin_m", "penetration_spacing_m")
# (low, high) inclusive bounds of the plain numbers; NaN fails every comparison.
_RANGES = {
    "box_padding": (0.0, 1.0),
    "skip_margin_m": (1e-3, 1.0),
    "penetration_spacing_m": (1e-4, 1e-2),
    "num_anchors": (1, 100_000),
    "points_per_batch": (1, 1 << 24),
    "anchor_seed": (0, 2**32 - 1),
}


class SettingsError(InputError):
    """Reconstruction settings out of range."""


@dataclass(frozen=True)
class ReconstructionSettings:
    """How :class:`~core.engine.Engine` reconstructs.

    Grid: ``resolution`` (final, per axis) = ``mise_resolution0 * 2**k``; the preview of
    :meth:`Engine.reconstruct_progressive` uses ``preview_resolution``. Network I's meshes,
    which only provide R's 512 surface anchors per hand, use ``anchor_resolution``.
    Query points live in each hand's canonical box of half-size ``0.5 + box_padding / 2``
    (normalised units). ``skip_margin_m``: lattice points farther than this from the hand's
    skeleton are taken as outside without evaluation (None evaluates everything, as the
    reference does).

    ``refinement_resolution`` (ours, an approximation; None = off, the reference's exact
    behaviour): network R runs only up to this lattice; finer lattice points take I's exact
    value plus R's correction (the logit difference R - I) interpolated trilinearly from the
    enclosing coarse cell, so R's cost stops growing with the resolution while I's fine
    detail stays. Exact at the coarse lattice points; see docs/ARCHITECTURE.md for the
    measured agreement.

    ``resolve_contact`` (ours; off = the networks' own surfaces): each point inside both
    hands goes to the hand whose occupancy margin is larger, by the rule the synthetic ground
    truth is built with (:mod:`core.engine.contact`), so the meshes meet instead of
    interpenetrating. A post-process on the lattices, not a network.

    ``closed_form_ref`` (ours; exact): an R whose decoder is still the identity of I's
    occupancy (its logit ``a * o_I + b``, as in the shipped sets until a trained R beats it)
    is evaluated from I's values in closed form, without anchors or R's decoder; the field
    is the same, and ``refinement_resolution`` then has nothing to approximate. False runs
    R's network anyway (checks, timing the network)."""

    resolution: int = 256
    preview_resolution: int = 64
    use_keypoint_refiner: bool = False
    use_refinement: bool = True  # I + R; False = I only
    threshold_init: float = 0.5
    threshold_ref: float = 0.45
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    half_precision: bool = False  # bfloat16 on CPU, float16 on CUDA, for the point networks
    box_padding: float = 0.1
    mise_resolution0: int = 32
    anchor_resolution: int = 64
    num_anchors: int = 512
    anchor_seed: int = 0
    skip_margin_m: float | None = 0.05
    refinement_resolution: int | None = None
    points_per_batch: int = 65536  # bounds the memory of one network call
    penetration: bool = True
    penetration_spacing_m: float = 1e-3
    resolve_contact: bool = False
    closed_form_ref: bool = True

    def __post_init__(self):
        _check_types(self)
        lattices = ("resolution", "preview_resolution", "anchor_resolution", "refinement_resolution")
        if not 2 <= self.mise_resolution0 <= 256:
            raise SettingsError(f"mise_resolution0 must lie in 2..256, got {self.mise_resolution0}")
        for name in lattices:
            value = getattr(self, name)
            if value is None:  # refinement_resolution only: off
                continue
            steps = math.log2(value / self.mise_resolution0) if value >= 1 else -1
            if value < self.mise_resolution0 or steps != int(steps):
                raise SettingsError(
                    f"{name} must be {self.mise_resolution0} times a power of two "
                    f"(e.g. 64, 128, 256), got {value}"
                )
            if value > MAX_RESOLUTION:
                raise SettingsError(
                    f"{name} {value} is above the limit of {MAX_RESOLUTION} per axis (memory and time "
                    f"grow with its cube; 256 is the reference's choice)"
                )
        if self.device not in DEVICES:
            raise SettingsError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("threshold_init", "threshold_ref"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise SettingsError(f"{name} must lie strictly between 0 and 1")
        _check_ranges(self)

    @property
    def box_size(self) -> float:
        return 1.0 + self.box_padding

    def upsampling_steps(self, resolution: int) -> int:
        return int(round(math.log2(resolution / self.mise_resolution0)))

    def with_(self, **changes) -> ReconstructionSettings:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_types(settings: ReconstructionSettings) -> None:
    """Each field has its type (a bool is not an int here; None only where it means off)."""
    for name in _BOOLS:
        if not isinstance(getattr(settings, name), bool):
            raise SettingsError(f"{name} must be true or false, got {getattr(settings, name)!r}")
    for name in _INTS:
        value = getattr(settings, name)
        if value is None and name == "refinement_resolution":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise SettingsError(f"{name} must be a whole number, got {value!r}")
    for name in _FLOATS:
        value = getattr(settings, name)
        if value is None and name == "skip_margin_m":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise SettingsError(f"{name} must be a finite number, got {value!r}")
    if not isinstance(settings.device, str):
        raise SettingsError(f"device must be one of {DEVICES}, got {settings.device!r}")


def _check_ranges(settings: ReconstructionSettings) -> None:
    for name, (low, high) in _RANGES.items():
        value = getattr(settings, name)
        if value is not None and not low <= value <= high:
            raise SettingsError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}")
