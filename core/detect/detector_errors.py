"""What the detector pipeline (MediaPipe + skeleton fit) leaves wrong, per hand, on synthetic
renders with known ground truth: the measurements behind network K's detector-like training
noise (:mod:`core.synth.detector_noise`, docs/detection.md).

``python -m core.detect.detector_errors SYNTH_DIR [--limit N] [--json PATH]`` runs
:func:`core.detect.pipeline.detect_image` on every ``*.png`` + ``*.npz`` sample written by
``python main.py synth --out SYNTH_DIR`` (with the sample's true camera) and prints, over the
hands found with the right side:

* ``depth_offset_mm``: wrist depth error (camera z), detected minus true;
* ``scale_ratio``: palm size (summed distances from the wrist to the thumb CMC and the four
  finger MCPs), detected / true: the hand's size error, without the fingers' own errors;
* ``depth_offset_unexplained_mm``: ``z_det - scale_ratio * z_true`` at the wrist, the depth
  error left after scaling the true hand about the camera centre by ``scale_ratio`` (that
  scaling keeps every projection: a single view cannot tell a big far hand from a small near
  one);
* ``rotation_deg``: angle of the rotation that best aligns the true palm (wrist, thumb CMC,
  four MCPs) with the detected one, both wrist-centred and size-normalised;
* swapped neighbouring fingers and failed fingers, judged in 2D against the projected truth
  (see :func:`finger_errors`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from core.hand.joints import HAND_SIDES
from core.types import Camera

FINGER_CHAINS = tuple(tuple(range(1 + 4 * f, 5 + 4 * f)) for f in range(5))  # mano order, thumb..pinky
PALM_JOINTS = (0, 1, 5, 9, 13, 17)
SWAP_PAIRS = ((1, 2), (2, 3), (3, 4))  # neighbouring fingers: index-middle, middle-ring, ring-pinky
# A finger's distal joints (PIP, DIP, tip) count as wrong when their mean 2D error exceeds this
# fraction of the true hand's 2D length (wrist -> middle MCP -> middle tip along the bones): a
# whole finger drawn elsewhere, not a bend error.
FAILED_FINGER_FRACTION = 0.25
# A pair counts as swapped when exchanging the two detected chains lowers their 2D error to
# below this fraction of the unswapped error, and that error is itself a failure.
SWAP_GAIN = 0.5
GROSS_ROTATION_DEG = 90.0


@dataclass
class HandErrors:
    """One detected hand against its ground truth (see the module docstring)."""

    side: str
    depth_offset_mm: float
    depth_offset_unexplained_mm: float
    scale_ratio: float
    rotation_deg: float
    rotation_in_plane_deg: float  # the rotation vector's component along the wrist's camera ray
    rotation_out_of_plane_deg: float  # its component across the ray (tilts that 2D hardly shows)
    mpjpe_wrist_aligned_mm: float
    swapped_pairs: list[tuple[int, int]] = field(default_factory=list)
    failed_fingers: list[int] = field(default_factory=list)
    failed_finger_reach_ratio: list[float] = field(default_factory=list)  # |tip - MCP|, detected / true
    sample: str = ""

    @property
    def gross(self) -> bool:
        """A palm turned by more than ``GROSS_ROTATION_DEG``: the detector saw another hand
        pose altogether (a flipped hand), not an error K could undo."""
        return self.rotation_deg > GROSS_ROTATION_DEG


def palm_size(joints: np.ndarray) -> float:
    """Summed distances from the wrist to the thumb CMC and the four finger MCPs (metres)."""
    j = np.asarray(joints, dtype=np.float64)
    return float(np.linalg.norm(j[list(PALM_JOINTS[1:])] - j[0], axis=1).sum())


def best_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation R minimising ``sum |R a_i - b_i|^2`` (Kabsch; rows are points, both
    already centred and scaled alike)."""
    u, _, vt = np.linalg.svd(np.asarray(b).T @ np.asarray(a))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def rotation_vector(r: np.ndarray) -> np.ndarray:
    """Axis times angle (radians) of rotation matrix ``r`` (angles below 180 degrees)."""
    angle = float(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))
    if angle < 1e-9:
        return np.zeros(3)
    w = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    n = np.linalg.norm(w)
    if n < 1e-9:  # 180 degrees: the axis is the eigenvector of eigenvalue 1
        vals, vecs = np.linalg.eigh((r + r.T) / 2)
        return vecs[:, int(np.argmax(vals))] * angle
    return w / n * angle


def _chain_error_px(pred_px: np.ndarray, true_px: np.ndarray, a: int, b: int) -> float:
    """Mean 2D error of detected finger ``a``'s distal joints against true finger ``b``'s."""
    return float(np.linalg.norm(pred_px[list(FINGER_CHAINS[a][1:])] - true_px[list(FINGER_CHAINS[b][1:])],
                                axis=1).mean())


def finger_errors(pred_px: np.ndarray, true_px: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
    """Swapped neighbouring finger pairs and failed fingers (indices 0 = thumb .. 4 = pinky),
    from the 2D keypoints (21, 2) of the detected and the true hand. A finger fails when its
    PIP, DIP and tip are off by more than ``FAILED_FINGER_FRACTION`` of the true hand's 2D
    length on average; a failed neighbouring pair whose exchange brings the error below
    ``SWAP_GAIN`` of it is a swap instead (its two fingers are not counted as failed)."""
    middle_ray = ((9, 0), (10, 9), (11, 10), (12, 11))  # wrist -> middle MCP -> ... -> middle tip
    hand_px = sum(float(np.linalg.norm(true_px[c] - true_px[p])) for c, p in middle_ray)
    limit = FAILED_FINGER_FRACTION * hand_px
    err = [_chain_error_px(pred_px, true_px, f, f) for f in range(5)]
    failed = {f for f in range(5) if err[f] > limit}
    swaps = []
    for a, b in SWAP_PAIRS:
        straight = err[a] + err[b]
        crossed = _chain_error_px(pred_px, true_px, a, b) + _chain_error_px(pred_px, true_px, b, a)
        if (a in failed or b in failed) and crossed < SWAP_GAIN * straight and not any(
            a in s or b in s for s in swaps
        ):
            swaps.append((a, b))
    swapped = {f for s in swaps for f in s}
    return swaps, sorted(failed - swapped)


def hand_errors(side: str, pred: np.ndarray, true: np.ndarray, camera: Camera) -> HandErrors:
    """The errors of one detected hand ``pred`` against ``true`` ((21, 3) camera frame, metres)."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    scale = palm_size(p) / palm_size(t)
    pc, tc = (p - p[0]) / scale, t - t[0]
    palm = list(PALM_JOINTS)
    swaps, failed = finger_errors(camera.project(p), camera.project(t))
    rotvec = rotation_vector(best_rotation(tc[palm], pc[palm]))
    ray = t[0] / np.linalg.norm(t[0])
    reach = [float(np.linalg.norm(p[FINGER_CHAINS[f][3]] - p[FINGER_CHAINS[f][0]])
                   / np.linalg.norm(t[FINGER_CHAINS[f][3]] - t[FINGER_CHAINS[f][0]])) for f in failed]
    return HandErrors(
        side=side,
        depth_offset_mm=float((p[0, 2] - t[0, 2]) * 1000),
        depth_offset_unexplained_mm=float((p[0, 2] - scale * t[0, 2]) * 1000),
        scale_ratio=float(scale),
        rotation_deg=float(np.degrees(np.linalg.norm(rotvec))),
        rotation_in_plane_deg=float(np.degrees(abs(rotvec @ ray))),
        rotation_out_of_plane_deg=float(np.degrees(np.linalg.norm(rotvec - (rotvec @ ray) * ray))),
        mpjpe_wrist_aligned_mm=float(np.linalg.norm((p - p[0]) - tc, axis=1).mean() * 1000),
        swapped_pairs=swaps,
        failed_fingers=failed,
        failed_finger_reach_ratio=reach,
    )


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return {}
    med = float(np.median(v))
    return {"mean": float(v.mean()), "sd": float(v.std()), "rms": float(np.sqrt(np.mean(v**2))),
            "median": med, "robust_sd": float(1.4826 * np.median(np.abs(v - med))),
            "p90_abs": float(np.percentile(np.abs(v), 90))}


def _share(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def summarise(hands: list[HandErrors], hands_true: int, wrong_side: int = 0) -> dict:
    """Statistics over the hands found with the right side, gross failures (see
    :attr:`HandErrors.gross`) counted apart (see the module docstring)."""
    n_found = len(hands)
    hands = [h for h in hands if not h.gross]
    n = len(hands)
    log_scale = [float(np.log(h.scale_ratio)) for h in hands]
    return {
        "hands_true": hands_true,
        "hands_found": n_found,
        "hands_wrong_side": wrong_side,
        "hands_gross_failure": n_found - n,
        "hands_measured": n,
        "depth_offset_mm": _stats([h.depth_offset_mm for h in hands]),
        "depth_offset_unexplained_mm": _stats([h.depth_offset_unexplained_mm for h in hands]),
        "scale_ratio": _stats([h.scale_ratio for h in hands]),
        "log_scale_ratio": _stats(log_scale),
        "rotation_deg": _stats([h.rotation_deg for h in hands]),
        "rotation_in_plane_deg": _stats([h.rotation_in_plane_deg for h in hands]),
        "rotation_out_of_plane_deg": _stats([h.rotation_out_of_plane_deg for h in hands]),
        "mpjpe_wrist_aligned_mm": _stats([h.mpjpe_wrist_aligned_mm for h in hands]),
        # per hand: chance that some neighbouring pair is swapped; per finger: chance of failing
        "swap_rate_per_hand": sum(bool(h.swapped_pairs) for h in hands) / n if n else None,
        "failed_finger_rate_per_finger": sum(len(h.failed_fingers) for h in hands) / (5 * n) if n else None,
        "failed_finger_counts": [sum(f in h.failed_fingers for h in hands) for f in range(5)],
        "failed_finger_reach_ratio": _stats([r for h in hands for r in h.failed_finger_reach_ratio]),
        "failed_finger_share_longer": _share([r > 1.0 for h in hands for r in h.failed_finger_reach_ratio]),
    }


def _mean_px(camera: Camera, a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(camera.project(a) - camera.project(b), axis=1).mean())


SIMULATIONS = ("jitter", "training")


def simulated_detection(keypoints, rng: np.random.Generator, simulate: str, noise=None):
    """K's training input instead of a detection: ``"jitter"`` = the jitter of
    :mod:`core.synth.noise` alone (K's noise before the detector-like terms), ``"training"`` =
    that with ``noise`` (default: the default :class:`~core.synth.detector_noise.DetectorNoise`)."""
    from core.synth.detector_noise import DetectorNoise, training_noise

    if simulate not in SIMULATIONS:
        raise ValueError(f"simulate must be one of {SIMULATIONS}, got {simulate!r}")
    return training_noise(keypoints, rng, (noise or DetectorNoise()) if simulate == "training" else None)


def measure_folder(folder: str | Path, limit: int | None = None,
                   simulate: str | None = None) -> tuple[list[HandErrors], int, int]:
    """Detect (MediaPipe + the default skeleton lifting) on each synthetic sample of
    ``folder``, or with ``simulate`` apply K's training noise to its truth (see
    :func:`simulated_detection`); returns the errors of the hands found on their true side,
    the number of true hands and the number of hands found with the wrong side."""
    from core.detect.pipeline import detect_image
    from core.synth.samples import load_sample

    files = sorted(Path(folder).glob("*.npz"))[:limit]
    if not files:
        raise FileNotFoundError(
            f"{folder} holds no synthetic samples (*.npz); write some with `python main.py synth --out DIR`"
        )
    hands, n_true, wrong = [], 0, 0
    for path in files:
        sample = load_sample(path)
        if simulate:
            found = simulated_detection(sample.keypoints, np.random.default_rng(int(sample.seed)), simulate)
        else:
            found = detect_image(sample.image, sample.camera).keypoints
        for side in HAND_SIDES:
            true = sample.keypoints.hand(side)
            n_true += true is not None
            pred = found.hand(side)
            if true is None or pred is None:
                continue
            other = sample.keypoints.hand("left" if side == "right" else "right")
            cam = sample.camera
            if other is not None and _mean_px(cam, pred, other) < _mean_px(cam, pred, true):
                wrong += 1  # the detection lies on the other hand in 2D: a side mix-up, not this hand's error
                continue
            hands.append(replace(hand_errors(side, pred, true, sample.camera), sample=path.stem))
    return hands, n_true, wrong


def measure_interhand(folder: str | Path) -> tuple[list[HandErrors], int, int]:
    """The same errors on the InterHand2.6M frames of ``folder`` (a cross-check only: a
    handful of hands; see :mod:`core.detect.evaluate_interhand` for the layout)."""
    import cv2

    from core.detect.evaluate_interhand import load_interhand_frames
    from core.detect.pipeline import detect_image

    hands, n_true, wrong = [], 0, 0
    for frame in load_interhand_frames(folder):
        rgb = cv2.cvtColor(cv2.imread(str(frame.image_path)), cv2.COLOR_BGR2RGB)
        found = detect_image(rgb, frame.camera).keypoints
        for side, true in frame.joints_cam_m.items():
            n_true += true is not None
            pred = found.hand(side)
            if true is not None and pred is not None:
                errors = hand_errors(side, pred, true, frame.camera)
                hands.append(replace(errors, sample=frame.image_path.name))
    return hands, n_true, wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="samples written by `python main.py synth --out DIR`, or with "
                        "--interhand an InterHand2.6M sample folder")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--interhand", action="store_true", help="FOLDER holds InterHand2.6M frames")
    parser.add_argument("--simulate", choices=SIMULATIONS, default=None,
                        help="measure K's training noise on the samples' truth instead of the detector")
    parser.add_argument("--json", default=None, help="also write the summary and every hand here")
    args = parser.parse_args(argv)
    if args.interhand:
        hands, n_true, wrong = measure_interhand(args.folder)
    else:
        hands, n_true, wrong = measure_folder(args.folder, args.limit, args.simulate)
    summary = summarise(hands, n_true, wrong)
    print(json.dumps(summary, indent=2))
    if args.json:
        report = {"summary": summary, "hands": [asdict(h) | {"gross": h.gross} for h in hands]}
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
