"""Temporal smoothing of per-frame keypoints: the One-Euro filter (Casiez et al., CHI 2012)
and a two-hand tracker that carries a hand over frames where detection failed.

One-Euro: an exponential low-pass whose cutoff rises with the signal's speed,
``cutoff = min_cutoff + beta * |dx/dt|``, so a still hand is smoothed strongly (no jitter)
while a moving hand is followed with little lag. ``alpha = 1 / (1 + tau / dt)`` with
``tau = 1 / (2 pi cutoff)``. Works on arrays of any shape (per element).
"""

from __future__ import annotations

import numpy as np

from core.types import TwoHandKeypoints


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * np.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Element-wise One-Euro filter. ``min_cutoff_hz``: smoothing at rest (lower = smoother);
    ``beta``: how fast the cutoff rises with speed (in 1 / signal units); ``d_cutoff_hz``:
    cutoff of the derivative estimate."""

    def __init__(self, min_cutoff_hz: float = 1.0, beta: float = 0.0, d_cutoff_hz: float = 1.0):
        if min_cutoff_hz <= 0 or d_cutoff_hz <= 0 or beta < 0:
            raise ValueError("One-Euro cutoffs must be > 0 and beta >= 0")
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.d_cutoff_hz = d_cutoff_hz
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t_s: float) -> np.ndarray:
        """Filter sample ``x`` taken at time ``t_s`` (seconds, increasing)."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or t_s <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t_s)
            return x.copy()
        dt = float(t_s) - self._t
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff_hz, dt) * (dx - self._dx)
        cutoff = self.min_cutoff_hz + self.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = float(t_s)
        return self._x.copy()


class TwoHandSmoother:
    """Smooths a stream of :class:`TwoHandKeypoints` per hand. A hand missing in a frame is
    carried over from its last filtered value for up to ``max_carry_frames`` frames and
    ``max_carry_s`` seconds since it was last seen (then dropped: on sparse frames, e.g. every
    40th, a copy would be a stale, frozen hand); carried hands are listed in :attr:`carried`;
    a hand that reappears after being dropped, or that jumps farther than
    ``reset_jump_m`` at the wrist (a different hand or a detector swap), restarts its filter.

    Defaults are for metres: at rest the cutoff is 1.5 Hz; ``beta`` = 2 raises it by 2 Hz per
    m/s of hand speed.

    ``track_sides``: a per-frame detector can swap the two labels, or label a lone hand with
    the other side. Before filtering, the sides are re-assigned from the tracks: two hands are
    swapped when the crossed assignment fits the last wrists at least ``swap_ratio`` times
    better; a lone hand within ``lone_hand_radius_m`` of the other side's last wrist (and
    ``swap_ratio`` times closer to it than to its own side's) is the same physical hand as
    that track: it takes that side when the track is established (seen in at least
    ``min_track_frames`` frames in a row), else the short track was the mislabel and is
    dropped instead of being carried over as a ghost. Each frame's decision is in
    :attr:`relabelled`."""

    def __init__(self, min_cutoff_hz: float = 1.5, beta: float = 2.0, d_cutoff_hz: float = 1.0,
                 max_carry_frames: int = 10, reset_jump_m: float = 0.15, track_sides: bool = True,
                 swap_ratio: float = 2.0, lone_hand_radius_m: float = 0.05, min_track_frames: int = 5,
                 max_carry_s: float = 0.4):
        self.max_carry_frames = max_carry_frames
        self.max_carry_s = max_carry_s
        self._last_seen_s: dict[str, float] = {"left": -np.inf, "right": -np.inf}
        self.reset_jump_m = reset_jump_m
        self.track_sides = track_sides
        self.swap_ratio = swap_ratio
        self.lone_hand_radius_m = lone_hand_radius_m
        self.min_track_frames = min_track_frames
        self._seen = {"left": 0, "right": 0}  # frames in a row each track was detected
        self.relabelled = False  # the last frame's sides were re-assigned from the tracks
        self._filters = {s: OneEuroFilter(min_cutoff_hz, beta, d_cutoff_hz) for s in ("left", "right")}
        self._last: dict[str, np.ndarray | None] = {"left": None, "right": None}
        self._missing = {"left": 0, "right": 0}
        self.carried: dict[str, bool] = {"left": False, "right": False}  # in the last output

    def assign_sides(self, keypoints: TwoHandKeypoints) -> TwoHandKeypoints:
        """``keypoints`` with the sides the tracks imply (see the class docstring)."""
        hands = {s: keypoints.hand(s) for s in ("left", "right")}
        last = self._last
        wrist = {s: None if hands[s] is None else np.asarray(hands[s], np.float64)[0] for s in hands}
        swap = False
        if all(w is not None for w in wrist.values()) and all(v is not None for v in last.values()):
            direct = sum(np.linalg.norm(wrist[s] - last[s][0]) for s in ("left", "right"))
            crossed = np.linalg.norm(wrist["left"] - last["right"][0]) + np.linalg.norm(
                wrist["right"] - last["left"][0]
            )
            swap = crossed * self.swap_ratio < direct
        else:
            present = [s for s in wrist if wrist[s] is not None]
            if len(present) == 1:
                own = present[0]
                other = "right" if own == "left" else "left"
                if last[other] is not None:
                    to_other = np.linalg.norm(wrist[own] - last[other][0])
                    to_own = np.inf if last[own] is None else np.linalg.norm(wrist[own] - last[own][0])
                    same_hand = to_other <= self.lone_hand_radius_m and to_other * self.swap_ratio < to_own
                    swap = same_hand and self._seen[other] >= self.min_track_frames
                    if same_hand and not swap:  # the short other track was this hand mislabelled
                        self._drop(other)
        self.relabelled = bool(swap)
        if not swap:
            return keypoints
        return TwoHandKeypoints(left=hands["right"], right=hands["left"])

    def _drop(self, side: str) -> None:
        self._last[side] = None
        self._filters[side].reset()
        self._seen[side] = 0

    def __call__(self, keypoints: TwoHandKeypoints, t_s: float) -> TwoHandKeypoints:
        if self.track_sides:
            keypoints = self.assign_sides(keypoints)
        out = {}
        for side in ("left", "right"):
            x = keypoints.hand(side)
            flt = self._filters[side]
            last = self._last[side]
            if x is None:
                self._seen[side] = 0
                self._missing[side] += 1
                keep = (last is not None and self._missing[side] <= self.max_carry_frames
                        and t_s - self._last_seen_s[side] <= self.max_carry_s)  # fmt: skip
                if not keep:
                    self._last[side] = None
                    flt.reset()
                out[side] = None if not keep else last.copy()
                self.carried[side] = keep
                continue
            x = np.asarray(x, dtype=np.float64)
            if last is None or np.linalg.norm(x[0] - last[0]) > self.reset_jump_m:
                flt.reset()
            self._missing[side] = 0
            self._last_seen_s[side] = float(t_s)
            self._seen[side] += 1
            self._last[side] = flt(x, t_s)
            out[side] = self._last[side].copy()
            self.carried[side] = False
        return TwoHandKeypoints(left=out["left"], right=out["right"])
