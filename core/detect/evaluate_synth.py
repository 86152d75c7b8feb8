"""Detector + lifting accuracy on synthetic two-hand renders with ground truth.

``python -m core.detect.evaluate_synth SAMPLES_DIR [--lifting skeleton|world] [--json PATH]``
``python -m core.detect.evaluate_synth SAMPLES_DIR --lift-only [--noise-px 3]``

``SAMPLES_DIR`` holds the ``*.png`` + ``*.npz`` pairs that ``python main.py synth --out DIR``
writes (``camera_K``, ``image_size``, ``joints_left`` / ``joints_right``: camera frame,
metres, ``mano`` order). Each render is run through the detector (retries on) and lifted
with its true camera; the same metrics as :mod:`.evaluate_interhand` (MPJPE after wrist
alignment, absolute wrist error, right-to-left root vector error) are printed per frame and
summarised, for the detected landmarks and, as a diagnostic, for the true 2D (projected
ground truth in place of the detector's landmarks, the detector's 3D shape kept).
The renders are not the real frames: their hands come from the synthetic hand model, so
they check that a change generalises, not that it meets the real-frame targets.

``--lift-only`` skips the detector: both hands' true joints are projected with Gaussian pixel
noise and given a detector-like 3D hint (the true shape at 0.7x its size with 6 mm noise, as
MediaPipe's world hands are too small); the two-hand skeleton fit then places them. This
isolates the placement (depth from size, the shared size prior, contact) from 2D errors.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from core.detect.evaluate_interhand import (
    InterHandFrame,
    format_table,
    lift_frames,
    lifting_summary,
    run_detector,
    score_frames,
)
from core.detect.lifting import DEFAULT_DEPTH_CUE, DEFAULT_METHOD, DEPTH_CUES, LIFTING_METHODS
from core.detect.skeleton_fit import FitOptions, HandObservation, fit_hands
from core.types import Camera


def load_synth_frames(folder: str | Path) -> list[InterHandFrame]:
    """Every ``*.npz`` with a sibling ``*.png`` in ``folder``, as evaluation frames."""
    folder = Path(folder)
    frames = []
    for npz in sorted(folder.glob("*.npz")):
        png = npz.with_suffix(".png")
        if not png.is_file():
            continue
        with np.load(npz) as d:
            for key in ("camera_K", "image_size", "joints_left", "joints_right"):
                if key not in d.files:
                    raise ValueError(f"{npz}: missing field {key!r} (see `python main.py synth --out`)")
            width, height = (int(x) for x in d["image_size"])
            camera = Camera(K=np.asarray(d["camera_K"], dtype=np.float64), width=width, height=height)
            joints = {s: np.asarray(d[f"joints_{s}"], dtype=np.float64) for s in ("left", "right")}
        frames.append(InterHandFrame(png, camera, joints))
    if not frames:
        raise FileNotFoundError(f"no *.npz + *.png pairs in {folder}")
    return frames


def lift_only(frames: list[InterHandFrame], noise_px: float = 3.0, seed: int = 0,
              options: FitOptions | None = None) -> dict:
    """The skeleton fit on projected ground truth + noise (see the module docstring):
    root vector error (mean, median, 90th percentile) and its depth part, wrist-aligned
    MPJPE, CPU time per hand (mean and worst; ``time.process_time``)."""
    rng = np.random.default_rng(seed)
    root, depth, mpjpe, cpu = [], [], [], []
    for fr in frames:
        truth = fr.joints_cam_m
        obs = []
        for s in ("left", "right"):
            uv = fr.camera.project(truth[s]) + rng.normal(scale=noise_px, size=(21, 2))
            hint = (truth[s] - truth[s].mean(0)) * 0.7 + rng.normal(scale=0.006, size=(21, 3))
            obs.append(HandObservation(s, uv, hint, 0.95))
        start = time.process_time()
        left, right = fit_hands(obs, fr.camera, options)
        cpu.append((time.process_time() - start) / 2)
        error = (left.joints_m[0] - right.joints_m[0]) - (truth["left"][0] - truth["right"][0])
        root.append(np.linalg.norm(error) * 1000)
        depth.append(abs(error[2]) * 1000)
        for fit in (left, right):
            t = truth[fit.side]
            mpjpe.append(np.linalg.norm((fit.joints_m - fit.joints_m[0]) - (t - t[0]), axis=1).mean() * 1000)
    return {"frames": len(frames), "noise_px": noise_px,
            "root_vector_error_mm_mean": float(np.mean(root)),
            "root_vector_error_mm_median": float(np.median(root)),
            "root_vector_error_mm_p90": float(np.percentile(root, 90)),
            "root_vector_depth_error_mm_median": float(np.median(depth)),
            "mpjpe_mm_mean": float(np.mean(mpjpe)),
            "cpu_ms_per_hand_mean": 1000 * float(np.mean(cpu)),
            "cpu_ms_per_hand_max": 1000 * float(np.max(cpu))}


def main(argv: list[str] | None = None) -> int:
    from core.detect.detector import MediaPipeHandDetector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", help="folder written by `python main.py synth --out`")
    parser.add_argument("--lifting", default=DEFAULT_METHOD, choices=LIFTING_METHODS)
    parser.add_argument("--depth-cue", default=DEFAULT_DEPTH_CUE, choices=DEPTH_CUES,
                        help="the skeleton fit's depth-direction cue (default: %(default)s)")
    parser.add_argument("--json", default=None, help="also write the summaries to this JSON file")
    parser.add_argument("--lift-only", action="store_true",
                        help="no detector: the skeleton fit on projected ground truth + noise")
    parser.add_argument("--noise-px", type=float, default=3.0, help="2D noise of --lift-only (pixels)")
    args = parser.parse_args(argv)
    frames = load_synth_frames(args.samples)
    if args.lift_only:
        report = lift_only(frames, args.noise_px)
        print(json.dumps(report, indent=1))
        return 0
    with MediaPipeHandDetector(retries=True) as det:
        detected = run_detector(frames, det)
    report = {}
    for name, true_2d in (("detected 2D", False), ("true 2D", True)):
        lifted = lift_frames([d for d in detected if d.detection.hands], args.lifting, true_2d=true_2d,
                             depth_cue=args.depth_cue)
        results = score_frames(lifted)
        title = f"synthetic renders, {name}, lifting={args.lifting}, depth_cue={args.depth_cue}"
        print(format_table(results, title) + "\n")
        both = [r for r in results if r.root_vector_error_mm is not None]
        summary = lifting_summary(results)
        summary["hands_annotated"] = 2 * len(frames)
        summary["frames_with_both_hands"] = len(both)
        summary["root_vector_error_mm_median"] = (
            float(np.median([r.root_vector_error_mm for r in both])) if both else None)
        print(json.dumps(summary) + "\n")
        report[name] = summary
    if args.json:
        from core.io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
