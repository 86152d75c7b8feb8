"""Where a reconstruction's occupancy values come from, one source per field kind:

* :class:`InitValues` -- network I, reused from a per-hand lattice store where known;
* :class:`ExactRefValues` -- network R at every asked point (the reference's rule);
* :class:`GuidedRefValues` -- R up to a coarse lattice, beyond it I's exact value plus R's
  interpolated correction (``ReconstructionSettings.refinement_resolution``);
* :class:`ClosedFormRefValues` -- an R whose logit is an affine function of I's occupancy
  (the identity R), from I's value alone: no anchors, no decoder
  (``ReconstructionSettings.closed_form_ref``).

A source is called as ``source(side, points_box, ijk, n)`` by the multiresolution extraction
and counts its work in a shared :class:`EvaluationCounts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from core.engine.hands import HandFrame
from core.engine.mise import LatticeValues
from core.models.ref_occ import AnchorContext

_LOGIT_CLIP = 1e-6  # keeps logits finite where an occupancy saturates in float32


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


@dataclass
class EvaluationCounts:
    """Points per kind of work in one job (reported in ``Reconstruction.diagnostics``)."""

    init_occ: int = 0  # I evaluated
    ref_occ: int = 0  # R evaluated
    ref_closed_form: int = 0  # R's value from I's by R's closed form (an identity R)
    ref_guided: int = 0  # R's value interpolated from the coarse lattice
    skipped: int = 0  # far from the skeleton: not evaluated
    reused: int = 0  # the extraction's prior (an earlier stage) supplied the value
    init_reused: int = 0  # I's value came from the lattice store

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def batched(fn: Callable[[np.ndarray], np.ndarray], points: np.ndarray, step: int) -> np.ndarray:
    """``fn`` over ``points`` in batches of at most ``step`` rows."""
    if len(points) <= step:
        return fn(points)
    return np.concatenate([fn(points[i : i + step]) for i in range(0, len(points), step)])


@dataclass
class InitValues:
    """Network I's occupancy at lattice points: reused where a hand's store knows it,
    evaluated (and stored) elsewhere."""

    backend: object
    features: object
    frames: dict[str, HandFrame]
    stores: dict[str, LatticeValues]
    half: bool
    points_per_batch: int
    counts: EvaluationCounts

    def __call__(self, side: str, points_box: np.ndarray, ijk: np.ndarray, n: int) -> np.ndarray:
        store = self.stores[side]
        found, values = store.lookup(ijk, n)
        missing = ~found
        self.counts.init_reused += int(found.sum())
        if missing.any():
            frame = self.frames[side]
            values[missing] = batched(
                lambda p: self.backend.init_occupancy(self.features, frame, p, self.half),
                points_box[missing],
                self.points_per_batch,
            )
            store.add(ijk[missing], n, values[missing])
            self.counts.init_occ += int(missing.sum())
        return values


@dataclass
class ExactRefValues:
    """Network R's occupancy at every asked point (I's value at the same points is its input)."""

    init: InitValues
    context: AnchorContext
    stores: dict[str, LatticeValues]  # R's values by hand (read by the guided source)

    def __call__(self, side: str, points_box: np.ndarray, ijk: np.ndarray, n: int) -> np.ndarray:
        return self.at(side, points_box, ijk, n, self.init(side, points_box, ijk, n))

    def at(self, side: str, points_box: np.ndarray, ijk: np.ndarray, n: int, init: np.ndarray) -> np.ndarray:
        """R's values given I's at the same points."""
        i = self.init
        frame = i.frames[side]
        values = batched(
            lambda p: i.backend.ref_occupancy(i.features, self.context, frame, p[:, :3], p[:, 3], i.half),
            np.concatenate([points_box, init[:, None]], axis=1),
            i.points_per_batch,
        )
        self.stores[side].add(ijk, n, values)
        i.counts.ref_occ += len(values)
        return values


@dataclass
class GuidedRefValues:
    """R exactly up to lattice ``coarse``; finer, R's field approximated as sigmoid(logit I(x)
    + trilinear interpolation of logit R - logit I over the enclosing coarse cell). Every
    point of a cell that MISE refines has its 8 coarse corners evaluated; points whose
    corners are not all known (none in practice) get R exactly."""

    exact: ExactRefValues
    coarse: int

    def __call__(self, side: str, points_box: np.ndarray, ijk: np.ndarray, n: int) -> np.ndarray:
        if n <= self.coarse:
            return self.exact(side, points_box, ijk, n)
        init_source, coarse = self.exact.init, self.coarse
        init = init_source(side, points_box, ijk, n)
        factor = n // coarse
        ijk = np.asarray(ijk, dtype=np.int64)
        base = np.minimum(ijk // factor, coarse - 1)
        frac = (ijk - base * factor).astype(np.float32) / factor
        correction = np.zeros(len(ijk), np.float32)
        known = np.ones(len(ijk), dtype=bool)
        for corner in np.ndindex(2, 2, 2):
            c = np.asarray(corner)
            at = base + c
            r_found, r_val = self.exact.stores[side].lookup(at, coarse)
            i_found, i_val = init_source.stores[side].lookup(at, coarse)
            known &= r_found & i_found
            weight = np.prod(np.where(c == 1, frac, 1.0 - frac), axis=1)
            correction += weight * (logit(r_val) - logit(i_val))
        values = sigmoid(logit(init) + correction)
        if not known.all():
            values[~known] = self.exact.at(side, points_box[~known], ijk[~known], n, init[~known])
        self.exact.stores[side].add(ijk[known], n, values[known])
        init_source.counts.ref_guided += int(known.sum())
        return values


@dataclass
class ClosedFormRefValues:
    """R's occupancy ``sigmoid(a * o_I + b)`` from I's value at the same points, for an R
    whose decoder reduces to that form (:meth:`RefOccNet.init_occupancy_affine`): the same
    field as :class:`ExactRefValues` without R's anchors, attention or decoder."""

    init: InitValues
    affine: tuple[float, float]
    stores: dict[str, LatticeValues]

    def __call__(self, side: str, points_box: np.ndarray, ijk: np.ndarray, n: int) -> np.ndarray:
        slope, offset = self.affine
        values = sigmoid(slope * self.init(side, points_box, ijk, n).astype(np.float32) + offset)
        self.stores[side].add(ijk, n, values)
        self.init.counts.ref_closed_form += len(values)
        return values
