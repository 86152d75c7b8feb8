"""Multiresolution iso-surface extraction (MISE) over an occupancy field.

The field lives in a cube ``[-box_size/2, box_size/2]^3`` sampled on the lattice
``{0..N}^3`` with ``N = resolution0 * 2**upsampling_steps``; lattice index ``i`` maps to
``box_size * (i / N - 0.5)``, as in the reference generator (§G.1 of the official notes).

The rule follows the reference: start with every corner of a ``resolution0^3`` voxel
grid; after each evaluation round, a leaf voxel (above the finest level) is split into
8 children when the *known* lattice points in its closed box hold values both
``>= threshold`` and ``<= threshold`` -- this includes finer points that neighbouring
voxels put on its faces. Rounds repeat until nothing is split. Only the corners of the
finest voxels decide the surface, so unknown points are later filled with any value on
the correct side (trilinear interpolation of the coarse leaf, as the reference does).

This module knows nothing about networks: a caller asks :meth:`MultiResolutionGrid.query`
for points, evaluates them however it likes (several grids in one batch), and hands the
values back with :meth:`MultiResolutionGrid.update`. :func:`run_multiresolution` is the
plain driver loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Value that stands for "far outside" around the grid, as in the reference extractor.
OUTSIDE_VALUE = -1e6

# The 27 child-corner offsets of a voxel in units of half its size.
_CHILD_CORNERS = np.stack(np.meshgrid(*([np.arange(3)] * 3), indexing="ij"), -1).reshape(-1, 3)
_CHILD_OFFSETS = np.stack(np.meshgrid(*([np.arange(2)] * 3), indexing="ij"), -1).reshape(-1, 3)
_NEIGHBOUR_SHIFTS = -_CHILD_OFFSETS  # voxels whose closed box may hold a lattice point


class ExtractionCancelled(Exception):
    """Raised by the driver when the caller's ``should_cancel`` returned True."""


@dataclass
class DenseGrid:
    """Occupancy values on a cropped, padded block of the lattice.

    ``values[a, b, c]`` is the value at lattice point ``origin + (a, b, c) - 1`` (one
    layer of :data:`OUTSIDE_VALUE` padding on every side keeps meshes closed). Every
    lattice point outside the block is on the outside of the iso-surface."""

    values: np.ndarray  # (nx, ny, nz) float32, padded
    origin: np.ndarray  # (3,) int lattice index of values[1, 1, 1]
    resolution: int  # N: lattice spans 0..N per axis
    box_size: float
    threshold: float

    def lattice_to_box(self, lattice: np.ndarray) -> np.ndarray:
        return self.box_size * (np.asarray(lattice, dtype=np.float64) / self.resolution - 0.5)

    def block_to_box(self, block_index: np.ndarray) -> np.ndarray:
        """Box coordinates of (fractional) indices into ``values`` (padding included)."""
        return self.lattice_to_box(np.asarray(block_index, dtype=np.float64) - 1.0 + self.origin)

    def box_to_lattice(self, points_box: np.ndarray) -> np.ndarray:
        return (np.asarray(points_box, dtype=np.float64) / self.box_size + 0.5) * self.resolution

    def sample(self, points_box: np.ndarray) -> np.ndarray:
        """Trilinear interpolation at (M, 3) box points; points off the block read as outside."""
        return self.sample_block_field(self.values, points_box, OUTSIDE_VALUE)

    def sample_block_field(self, field: np.ndarray, points_box: np.ndarray, off_block: float) -> np.ndarray:
        """Trilinear interpolation of any block-shaped ``field`` (e.g. a distance derived from
        ``values``) at (M, 3) box points; ``off_block`` off the block."""
        from scipy.ndimage import map_coordinates

        idx = self.box_to_lattice(points_box) - self.origin + 1.0
        return map_coordinates(field, idx.T, order=1, mode="constant", cval=off_block).astype(np.float32)


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def grid_memory_bytes(resolution: int) -> int:
    """Upper estimate of one grid's memory: the level flags (3 booleans per cell of every
    coarser level), the dense float32 values over the finest lattice, and the known values
    (int64 index + float32) of about a fifth of the lattice."""
    flags = sum(3 * (resolution // 2**k) ** 3 for k in range(1, 12) if resolution // 2**k >= 1)
    lattice = (resolution + 1) ** 3
    return int(flags + 4 * lattice + 12 * lattice / 5)


def check_grid_memory(resolution: int) -> None:
    """Refuse a grid whose estimate exceeds the memory available now (before allocating)."""
    from core.errors import LimitError

    need, free = grid_memory_bytes(resolution), available_memory_bytes()
    if free is not None and need > free:
        raise LimitError(
            f"a {resolution}^3 grid needs about {need / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB "
            "of memory is available; choose a lower resolution"
        )


class MultiResolutionGrid:
    """Octree refinement state for one field.

    ``skip_outside``: optional predicate on (M, 3) box points; points it marks are taken as
    outside (value 0) without evaluation -- used to skip space far from a hand.
    ``prior``: optional look-up of values already known elsewhere (e.g. from a coarser
    pass): (M, 3) lattice indices -> (found mask, values); found points are not queried."""

    def __init__(
        self,
        resolution0: int = 32,
        upsampling_steps: int = 3,
        threshold: float = 0.5,
        box_size: float = 1.1,
        skip_outside: Callable[[np.ndarray], np.ndarray] | None = None,
        prior: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        if resolution0 < 1 or upsampling_steps < 0:
            raise ValueError("resolution0 must be >= 1 and upsampling_steps >= 0")
        self.resolution0 = int(resolution0)
        self.depth = int(upsampling_steps)
        self.threshold = float(threshold)
        self.box_size = float(box_size)
        self.resolution = self.resolution0 * 2**self.depth
        check_grid_memory(self.resolution)
        self._lattice_size = self.resolution + 1
        self._skip_outside = skip_outside
        self._prior = prior

        n = [self.resolution0 * 2**level for level in range(self.depth)]
        self._level_sizes = n
        self._leaf = [np.zeros(m**3, dtype=bool) for m in n]
        self._pos = [np.zeros(m**3, dtype=bool) for m in n]
        self._neg = [np.zeros(m**3, dtype=bool) for m in n]
        if self.depth:
            self._leaf[0][:] = True

        self._known_lin = np.zeros(0, dtype=np.int64)  # sorted
        self._known_val = np.zeros(0, dtype=np.float32)
        self._finest_lo = np.full(3, self.resolution, dtype=np.int64)
        self._finest_hi = np.zeros(3, dtype=np.int64)
        if self.depth == 0:  # the single level is the finest one
            self._finest_lo[:] = 0
            self._finest_hi[:] = self.resolution

        step0 = 2**self.depth
        corners = np.stack(
            np.meshgrid(*([np.arange(self.resolution0 + 1) * step0] * 3), indexing="ij"), -1
        ).reshape(-1, 3)
        self._pending = np.zeros(0, dtype=np.int64)
        self._auto_lin = np.zeros(0, dtype=np.int64)  # points whose value needs no evaluation
        self._auto_val = np.zeros(0, dtype=np.float32)
        self.evaluated_points = 0
        self.skipped_points = 0
        self.reused_points = 0
        self.rounds = 0
        self._set_pending(self._to_lin(corners))

    # -- lattice helpers -----------------------------------------------------------------
    def _to_lin(self, ijk: np.ndarray) -> np.ndarray:
        s = self._lattice_size
        ijk = ijk.astype(np.int64)
        return (ijk[:, 0] * s + ijk[:, 1]) * s + ijk[:, 2]

    def _from_lin(self, lin: np.ndarray) -> np.ndarray:
        s = self._lattice_size
        return np.stack([lin // (s * s), (lin // s) % s, lin % s], -1)

    def lattice_to_box(self, lattice: np.ndarray) -> np.ndarray:
        return self.box_size * (np.asarray(lattice, dtype=np.float64) / self.resolution - 0.5)

    # -- public protocol -------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return len(self._pending) == 0 and len(self._auto_lin) == 0

    def query(self) -> np.ndarray:
        """(M, 3) int64 lattice indices still to evaluate (empty when finished)."""
        while len(self._pending) == 0 and len(self._auto_lin) > 0:
            self._absorb(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        return self._from_lin(self._pending)

    def query_box(self) -> np.ndarray:
        """The points of :meth:`query` in box coordinates, (M, 3) float32."""
        return self.lattice_to_box(self.query()).astype(np.float32)

    def update(self, values: np.ndarray) -> None:
        """Values (M,) at the points of the last :meth:`query`, in the same order."""
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        if len(values) != len(self._pending):
            raise ValueError(f"expected {len(self._pending)} values, got {len(values)}")
        self.evaluated_points += len(values)
        self.rounds += 1
        self._absorb(self._pending, values)

    # -- refinement ------------------------------------------------------------------------
    def _set_pending(self, lin: np.ndarray) -> None:
        auto_lin, auto_val = [], []
        if self._prior is not None and len(lin):
            found, values = self._prior(self._from_lin(lin))
            found = np.asarray(found, dtype=bool)
            auto_lin.append(lin[found])
            auto_val.append(np.asarray(values, dtype=np.float32)[found])
            self.reused_points += int(found.sum())
            lin = lin[~found]
        if self._skip_outside is not None and len(lin):
            skip = np.asarray(self._skip_outside(self.lattice_to_box(self._from_lin(lin))), dtype=bool)
            auto_lin.append(lin[skip])
            auto_val.append(np.zeros(int(skip.sum()), dtype=np.float32))
            self.skipped_points += int(skip.sum())
            lin = lin[~skip]
        self._pending = lin
        self._auto_lin = np.concatenate(auto_lin) if auto_lin else np.zeros(0, dtype=np.int64)
        self._auto_val = np.concatenate(auto_val) if auto_val else np.zeros(0, dtype=np.float32)

    def _absorb(self, lin: np.ndarray, values: np.ndarray) -> None:
        lin = np.concatenate([lin, self._auto_lin])
        values = np.concatenate([values, self._auto_val])
        self._pending = np.zeros(0, dtype=np.int64)
        self._auto_lin = np.zeros(0, dtype=np.int64)
        self._auto_val = np.zeros(0, dtype=np.float32)

        all_lin = np.concatenate([self._known_lin, lin])
        all_val = np.concatenate([self._known_val, values])
        order = np.argsort(all_lin, kind="stable")
        self._known_lin, self._known_val = all_lin[order], all_val[order]

        self._mark_flags(self._from_lin(lin), values)
        self._set_pending(self._subdivide())

    def _mark_flags(self, ijk: np.ndarray, values: np.ndarray) -> None:
        """OR the new points into the >=/<= threshold flags of every voxel (any level above
        the finest) whose closed box holds them. Flags do not depend on leafness."""
        pos = values >= self.threshold
        neg = values <= self.threshold
        for level, n in enumerate(self._level_sizes):
            size = 2 ** (self.depth - level)
            q, r = np.divmod(ijk, size)
            on_face = r == 0  # (M, 3): on a voxel face along that axis, so shared with the voxel below
            for shift in _NEIGHBOUR_SHIFTS:
                moved = shift != 0
                # a point belongs to the voxel shifted by -1 along an axis only when it lies
                # on that face; most points lie inside one voxel and only take shift 0
                rows = np.flatnonzero(np.all(on_face[:, moved], axis=1)) if moved.any() else slice(None)
                v = q[rows] + shift
                ok = np.all((v >= 0) & (v < n), axis=1)
                v = v[ok]
                vl = (v[:, 0] * n + v[:, 1]) * n + v[:, 2]
                self._pos[level][vl[pos[rows][ok]]] = True
                self._neg[level][vl[neg[rows][ok]]] = True

    def _subdivide(self) -> np.ndarray:
        """Split every flagged leaf; return the sorted new lattice points (linear)."""
        to_split = [
            np.flatnonzero(self._leaf[lv] & self._pos[lv] & self._neg[lv]) for lv in range(self.depth)
        ]
        new_points = []
        for level, idx in enumerate(to_split):
            if len(idx) == 0:
                continue
            n = self._level_sizes[level]
            size = 2 ** (self.depth - level)
            self._leaf[level][idx] = False
            vox = np.stack([idx // (n * n), (idx // n) % n, idx % n], -1)
            if level + 1 < self.depth:
                child = (2 * vox[:, None, :] + _CHILD_OFFSETS[None]).reshape(-1, 3)
                m = 2 * n
                self._leaf[level + 1][(child[:, 0] * m + child[:, 1]) * m + child[:, 2]] = True
            else:
                self._finest_lo = np.minimum(self._finest_lo, vox.min(0) * size)
                self._finest_hi = np.maximum(self._finest_hi, (vox.max(0) + 1) * size)
            corners = vox[:, None, :] * size + _CHILD_CORNERS[None] * (size // 2)
            new_points.append(self._to_lin(corners.reshape(-1, 3)))
        if not new_points:
            return np.zeros(0, dtype=np.int64)
        lin = np.unique(np.concatenate(new_points))
        pos = np.searchsorted(self._known_lin, lin)
        pos = np.minimum(pos, len(self._known_lin) - 1)
        known = self._known_lin[pos] == lin if len(self._known_lin) else np.zeros(len(lin), bool)
        return lin[~known]

    # -- output ----------------------------------------------------------------------------
    def known_points(self) -> tuple[np.ndarray, np.ndarray]:
        """All evaluated (or skipped) lattice points (M, 3) and their values (M,)."""
        return self._from_lin(self._known_lin), self._known_val.copy()

    def to_dense(self) -> DenseGrid:
        """Values on the smallest block (aligned to the coarse lattice) that holds every
        finest voxel and every point at or above the threshold; see :class:`DenseGrid`."""
        ijk = self._from_lin(self._known_lin)
        inside = self._known_val >= self.threshold
        lo = self._finest_lo.copy()
        hi = self._finest_hi.copy()
        if inside.any():
            lo = np.minimum(lo, ijk[inside].min(0))
            hi = np.maximum(hi, ijk[inside].max(0))
        step0 = 2**self.depth
        if np.any(lo > hi):  # nothing refined and nothing inside: an empty block
            lo = np.zeros(3, np.int64)
            hi = np.full(3, step0, np.int64)
        lo = (np.maximum(lo - 1, 0) // step0) * step0
        hi = np.minimum(-(-(hi + 1) // step0) * step0, self.resolution)

        # Coarse lattice values, then halve the spacing level by level: interpolate the
        # midpoints and overwrite with the points known at that level.
        block = None
        for level in range(self.depth + 1):
            step = 2 ** (self.depth - level)
            shape = tuple(((hi - lo) // step + 1).tolist())
            if block is None:
                block = np.zeros(shape, dtype=np.float32)
            else:
                block = _upsample_midpoints(block)
            on_level = np.all(ijk % step == 0, axis=1) & np.all((ijk >= lo) & (ijk <= hi), axis=1)
            local = (ijk[on_level] - lo) // step
            block[local[:, 0], local[:, 1], local[:, 2]] = self._known_val[on_level]
        padded = np.pad(block, 1, mode="constant", constant_values=OUTSIDE_VALUE)
        return DenseGrid(padded, lo.astype(np.int64), self.resolution, self.box_size, self.threshold)


def _upsample_midpoints(a: np.ndarray) -> np.ndarray:
    """Trilinear refinement of a lattice block by 2 (n -> 2n - 1 points per axis)."""
    for axis in range(3):
        n = a.shape[axis]
        shape = list(a.shape)
        shape[axis] = 2 * n - 1
        out = np.empty(shape, dtype=a.dtype)
        even = [slice(None)] * 3
        odd = [slice(None)] * 3
        even[axis] = slice(0, None, 2)
        odd[axis] = slice(1, None, 2)
        out[tuple(even)] = a
        lo = [slice(None)] * 3
        up = [slice(None)] * 3
        lo[axis] = slice(0, -1)
        up[axis] = slice(1, None)
        out[tuple(odd)] = 0.5 * (a[tuple(lo)] + a[tuple(up)])
        a = out
    return a


class LatticeValues:
    """Values known at lattice points, shared between grids of different resolutions.

    Points are stored on the lattice of ``resolution`` (the finest used); a point of a
    coarser lattice ``n`` (``resolution`` divisible by ``n``) is the same point scaled by
    ``resolution / n``."""

    def __init__(self, resolution: int):
        self.resolution = int(resolution)
        self._lin = np.zeros(0, dtype=np.int64)
        self._val = np.zeros(0, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._lin)

    def _key(self, ijk: np.ndarray, n: int) -> np.ndarray:
        if self.resolution % n:
            raise ValueError(f"lattice {n} does not divide the store's lattice {self.resolution}")
        s = self.resolution + 1
        ijk = np.asarray(ijk, dtype=np.int64) * (self.resolution // n)
        return (ijk[:, 0] * s + ijk[:, 1]) * s + ijk[:, 2]

    def add(self, ijk: np.ndarray, n: int, values: np.ndarray) -> None:
        lin = np.concatenate([self._lin, self._key(ijk, n)])
        val = np.concatenate([self._val, np.asarray(values, dtype=np.float32).reshape(-1)])
        lin, first = np.unique(lin, return_index=True)
        self._lin, self._val = lin, val[first]

    def lookup(self, ijk: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, values) for (M, 3) points of lattice ``n``."""
        key = self._key(ijk, n)
        values = np.zeros(len(key), dtype=np.float32)
        if len(self._lin) == 0 or len(key) == 0:
            return np.zeros(len(key), dtype=bool), values
        pos = np.minimum(np.searchsorted(self._lin, key), len(self._lin) - 1)
        found = self._lin[pos] == key
        values[found] = self._val[pos[found]]
        return found, values

    def covering(self, n: int) -> LatticeValues:
        """A store that can hold points of lattice ``n``: this one when ``n`` divides its
        lattice, else a copy re-keyed to lattice ``n`` (``n`` a multiple of this one's)."""
        if self.resolution % n == 0:
            return self
        if n % self.resolution:
            raise ValueError(f"lattice {n} is not a multiple of the store's lattice {self.resolution}")
        s = self.resolution + 1
        ijk = np.stack([self._lin // (s * s), (self._lin // s) % s, self._lin % s], -1)
        out = LatticeValues(n)
        out._lin = out._key(ijk, self.resolution)  # scaling keeps the keys sorted
        out._val = self._val.copy()
        return out

    def prior_for(self, n: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """A ``prior`` for a :class:`MultiResolutionGrid` of resolution ``n``."""
        return lambda ijk: self.lookup(ijk, n)


def run_multiresolution(
    grids: Sequence[MultiResolutionGrid],
    evaluate: Callable[[list[np.ndarray]], Sequence[np.ndarray]],
    should_cancel: Callable[[], bool] | None = None,
) -> int:
    """Drive several grids to completion. ``evaluate`` receives one (M_i, 3) float32 array
    of box points per grid (some possibly empty) and returns the values per grid, so all
    fields are evaluated in the same batches. Returns the number of points evaluated."""
    total = 0
    while True:
        queries = [g.query_box() for g in grids]
        if all(len(q) == 0 for q in queries):
            return total
        if should_cancel is not None and should_cancel():
            raise ExtractionCancelled()
        values = evaluate(queries)
        for g, q, v in zip(grids, queries, values, strict=True):
            if len(q):
                g.update(v)
            total += len(q)


def dense_grid_values(
    evaluate: Callable[[np.ndarray], np.ndarray],
    resolution: int,
    box_size: float,
    threshold: float,
    chunk: int = 262144,
) -> DenseGrid:
    """Evaluate a field on every lattice point (the brute-force path, for comparisons)."""
    axis = box_size * (np.arange(resolution + 1) / resolution - 0.5)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    values = np.concatenate(
        [
            np.asarray(evaluate(grid[i : i + chunk]), np.float32).reshape(-1)
            for i in range(0, len(grid), chunk)
        ]
    )
    block = values.reshape((resolution + 1,) * 3)
    padded = np.pad(block, 1, mode="constant", constant_values=OUTSIDE_VALUE)
    return DenseGrid(padded, np.zeros(3, np.int64), resolution, box_size, threshold)
