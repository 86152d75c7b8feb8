"""Does the encoder's second opinion recover missed hands, and does it add false ones?

``python -m core.detect.evaluate_second_opinion --weights ENCODER.safetensors
[--interhand DIR] [--renders DIR] [--limit N] [--json PATH]``

MediaPipe (retries on) runs once per frame; then :class:`.second_opinion.EncoderSecondOpinion`
is asked in two situations:

* **missed**: MediaPipe found one hand of two. Does the encoder add the other one?
* **left out**: MediaPipe found both. Each found hand is withheld in turn and the encoder
  asked again, which tests recovery on many more hands than MediaPipe really misses.

An added hand is **right** when its mean 2D error to the projected ground truth is within
:data:`RIGHT_FRACTION` of that hand's 2D box, and **false** otherwise (also when the frame has
no such hand). The real frames (InterHand2.6M, ../shared/realdata) and renders
(``python main.py synth --out DIR``) are reported separately.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.detect.detector import HandDetection, ImageDetection
from core.detect.evaluate_interhand import InterHandFrame, load_interhand_frames, run_detector
from core.detect.second_opinion import SOURCE, EncoderSecondOpinion

RIGHT_FRACTION = 0.2  # of the true hand's 2D box: a hand in the right place, not a nearby blob


@dataclass
class SecondOpinionScores:
    frames: int = 0
    missed: int = 0  # true hands MediaPipe did not find, in frames where it found the other
    missed_recovered: int = 0
    left_out: int = 0  # found hands withheld in turn
    left_out_recovered: int = 0
    false_hands: int = 0  # added hands that are not where the true hand is
    added_errors_px: list[float] = field(default_factory=list)  # right additions, mean 2D error

    def row(self, name: str) -> str:
        err = f"{np.mean(self.added_errors_px):.1f}" if self.added_errors_px else "-"
        return (f"| {name} | {self.frames} | {self.missed_recovered}/{self.missed} "
                f"| {self.left_out_recovered}/{self.left_out} | {self.false_hands} | {err} |")


TABLE_HEAD = ("| frames | n | missed by MediaPipe: recovered | withheld: recovered | false hands "
              "| 2D error of recovered (px) |\n|---|---|---|---|---|---|")


class _Fixed:
    def __init__(self, detection: ImageDetection):
        self.detection = detection

    def detect(self, image_rgb):
        return self.detection


def _judge(added: HandDetection | None, frame: InterHandFrame, scores: SecondOpinionScores) -> bool:
    """Score one addition (None = nothing added); True when a right hand was added."""
    if added is None:
        return False
    truth = frame.joints_cam_m.get(added.side)
    if truth is None:
        scores.false_hands += 1
        return False
    truth_px = frame.camera.project(truth)
    error = float(np.linalg.norm(added.landmarks_px - truth_px, axis=1).mean())
    if error > RIGHT_FRACTION * float(np.ptp(truth_px, axis=0).max()):
        scores.false_hands += 1
        return False
    scores.added_errors_px.append(error)
    return True


def _ask(encoder, rgb: np.ndarray, kept: HandDetection, detection: ImageDetection) -> HandDetection | None:
    one = ImageDetection([kept], detection.width, detection.height, list(detection.views_tried))
    result = EncoderSecondOpinion(_Fixed(one), encoder).detect(rgb)
    return next((h for h in result.hands if h.source == SOURCE), None)


def score_second_opinion(frames: list[InterHandFrame], encoder, detector) -> SecondOpinionScores:
    scores = SecondOpinionScores()
    for d in run_detector(frames, detector):
        scores.frames += 1
        found = d.detection.hands
        if len(found) == 1:
            other = "left" if found[0].side == "right" else "right"
            added = _ask(encoder, d.image_rgb, found[0], d.detection)
            if d.frame.joints_cam_m.get(other) is not None:
                scores.missed += 1
                scores.missed_recovered += _judge(added, d.frame, scores)
            else:
                _judge(added, d.frame, scores)
        elif len(found) == 2:
            for kept, withheld in ((found[0], found[1]), (found[1], found[0])):
                if d.frame.joints_cam_m.get(withheld.side) is None:
                    continue
                scores.left_out += 1
                added = _ask(encoder, d.image_rgb, kept, d.detection)
                scores.left_out_recovered += _judge(added, d.frame, scores)
    return scores


def main(argv: list[str] | None = None) -> int:
    from core.detect.detector import MediaPipeHandDetector
    from core.detect.evaluate_synth import load_synth_frames
    from core.io.atomic import write_text_atomic
    from core.models.registry import load_image_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2].parent / "shared/realdata/interhand26m_samples"
    parser.add_argument("--weights", type=Path, required=True, help="image_encoder.safetensors")
    parser.add_argument("--interhand", type=Path, default=default, help="InterHand2.6M sample folder")
    parser.add_argument("--renders", type=Path, default=None, help="synth folder (png + npz)")
    parser.add_argument("--limit", type=int, default=100, help="renders: the first N")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    encoder = load_image_encoder(args.weights)
    sets = {}
    if args.interhand.is_dir():
        sets["InterHand2.6M (real)"] = load_interhand_frames(args.interhand)
    if args.renders is not None:
        sets["renders"] = load_synth_frames(args.renders)[: args.limit]
    report = {}
    with MediaPipeHandDetector(retries=True) as detector:
        for name, frames in sets.items():
            report[name] = score_second_opinion(frames, encoder, detector)
    print(TABLE_HEAD)
    for name, scores in report.items():
        print(scores.row(name))
    if args.json:
        write_text_atomic(args.json, json.dumps({k: asdict(v) for k, v in report.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
