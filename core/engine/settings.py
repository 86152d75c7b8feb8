"""Settings of one reconstruction (plain data; the defaults follow the reference)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from core.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


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
    measured agreement."""

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

    def __post_init__(self):
        lattices = ("resolution", "preview_resolution", "anchor_resolution", "refinement_resolution")
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
        if self.device not in DEVICES:
            raise SettingsError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("threshold_init", "threshold_ref"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise SettingsError(f"{name} must lie strictly between 0 and 1")
        if self.box_padding < 0 or self.num_anchors < 1 or self.points_per_batch < 1:
            raise SettingsError("box_padding must be >= 0; num_anchors and points_per_batch >= 1")

    @property
    def box_size(self) -> float:
        return 1.0 + self.box_padding

    def upsampling_steps(self, resolution: int) -> int:
        return int(round(math.log2(resolution / self.mise_resolution0)))

    def with_(self, **changes) -> ReconstructionSettings:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)
