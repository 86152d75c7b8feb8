"""2D joints on real InterHand2.6M frames: the image encoder's heatmap read-out next to MediaPipe.

``python -m core.detect.evaluate_encoder_2d --weights ENCODER.safetensors [SAMPLES_DIR] [--json PATH]``

For every frame and every hand with ground truth, the ground-truth 3D joints are projected
with the frame's camera. The encoder reads the crop the engine would use (both hands' ground
truth filling 80 % of 256 px), so this measures its 2D accuracy on real pixels given a right
crop; MediaPipe runs on the whole frame (with its retries). Errors are in crop pixels (the
same scale for both, so a 4 px error means the same on every frame) and PCK at 0.05 of the
hand's 2D box; a hand MediaPipe does not find is listed as missed, and the encoder's figures
are still given for it. The encoder's presence decision (:class:`PresenceRule`) is listed too.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from core.detect.encoder_hands import read_hands_in_crop
from core.detect.evaluate_interhand import load_interhand_frames
from core.engine.image_input import crop_for_keypoints
from core.hand.joints import HAND_SIDES
from core.io.atomic import write_text_atomic

PCK_FRACTION = 0.05


@dataclass
class HandRow:
    image: str
    side: str
    encoder_error_px: float
    encoder_pck: float
    encoder_present: bool
    mediapipe_error_px: float | None  # None: missed
    mediapipe_pck: float | None


def _errors(pred_px: np.ndarray, truth_px: np.ndarray, crop_scale: float) -> tuple[float, float]:
    err = np.linalg.norm(pred_px - truth_px, axis=1)
    box = float(np.ptp(truth_px, axis=0).max())
    return float(err.mean() * crop_scale), float((err <= PCK_FRACTION * box).mean())


def evaluate(samples: Path, encoder, detector, flip_test: bool = False) -> list[HandRow]:
    rows = []
    for frame in load_interhand_frames(samples):
        truth = {s: j for s, j in frame.joints_cam_m.items() if j is not None}
        if not truth:
            continue
        rgb = cv2.cvtColor(cv2.imread(str(frame.image_path)), cv2.COLOR_BGR2RGB)
        transform = crop_for_keypoints(frame.camera, list(truth.values()))
        read = read_hands_in_crop(encoder, rgb, transform, flip_test=flip_test)
        found = detector.detect(rgb)
        for side in HAND_SIDES:
            if side not in truth:
                continue
            truth_px = frame.camera.project(truth[side])
            enc_err, enc_pck = _errors(read[side].joints_px, truth_px, transform.scale)
            hand = found.hand(side)
            mp_err, mp_pck = (None, None)
            if hand is not None:
                mp_err, mp_pck = _errors(hand.landmarks_px, truth_px, transform.scale)
            rows.append(
                HandRow(frame.image_path.name, side, enc_err, enc_pck, read[side].present, mp_err, mp_pck)
            )
    return rows


def format_table(rows: list[HandRow]) -> str:
    def fmt(x: float | None, pct: bool = False) -> str:
        if x is None:
            return "missed"
        return f"{100 * x:.0f} %" if pct else f"{x:.1f}"

    lines = [
        "| frame | hand | encoder error (crop px) | encoder PCK@0.05 | encoder says present "
        "| MediaPipe error (crop px) | MediaPipe PCK@0.05 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        present = "yes" if r.encoder_present else "no"
        lines.append(
            f"| {r.image} | {r.side} | {fmt(r.encoder_error_px)} | {fmt(r.encoder_pck, True)} | {present} "
            f"| {fmt(r.mediapipe_error_px)} | {fmt(r.mediapipe_pck, True)} |"
        )
    found = [r for r in rows if r.mediapipe_error_px is not None]
    enc_err = np.mean([r.encoder_error_px for r in rows])
    enc_pck = 100 * np.mean([r.encoder_pck for r in rows])
    mp_mean = np.mean([r.mediapipe_error_px for r in found]) if found else None
    mp_err = f"{mp_mean:.1f} ({len(found)} found)" if found else "none found"
    mp_pck = f"{100 * np.mean([r.mediapipe_pck for r in found]):.0f} %" if found else "-"
    lines.append(
        f"| **mean** | {len(rows)} hands | {enc_err:.1f} | {enc_pck:.0f} % "
        f"| {sum(r.encoder_present for r in rows)}/{len(rows)} | {mp_err} | {mp_pck} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from core.detect.detector import MediaPipeHandDetector
    from core.training.encoder_eval import load_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2].parent / "shared/realdata/interhand26m_samples"
    parser.add_argument("samples", nargs="?", type=Path, default=default)
    parser.add_argument("--weights", type=Path, required=True, help="image_encoder.safetensors")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--flip-test", action="store_true",
                        help="the encoder's maps averaged with the mirrored crop's")
    args = parser.parse_args(argv)
    encoder = load_encoder(args.weights)
    with MediaPipeHandDetector(retries=True) as detector:
        rows = evaluate(args.samples, encoder, detector, flip_test=args.flip_test)
    print(format_table(rows))
    if args.json:
        write_text_atomic(args.json, json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
