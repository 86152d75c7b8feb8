"""Regenerate the bundled sample ``resources/samples/sample_0`` (our own synthetic data):
``python -m core.synth.make_bundled_sample [--out DIR]``.

Writes ``image.png`` (a 320 x 320 render of two interacting hands) and ``keypoints.json``
(ground-truth keypoints, camera frame, metres, mano order, with the crop camera) in the
project's keypoint JSON format.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from core.io.keypoints import KeypointFrame, save_keypoints_json
from core.synth import render as rd
from core.synth.samples import SynthConfig, generate_sample

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "resources" / "samples" / "sample_0"
BUNDLED_SEED = 2  # first seed from SEARCH_START whose sample passes _is_nice (fixed for reproducibility)
SEARCH_START = 0
IMAGE_SIZE = 320
CONFIG = SynthConfig(image_size=IMAGE_SIZE, occluder_prob=0.0, forearm_prob=1.0, interaction="gripping")


def _is_nice(sample) -> bool:
    """Both hands clearly visible (each >= 25 % of the hand pixels), touching, not too dark."""
    left = (sample.labels == rd.LABEL_LEFT).sum()
    right = (sample.labels == rd.LABEL_RIGHT).sum()
    hands = left + right
    bright = sample.image[(sample.labels == rd.LABEL_LEFT) | (sample.labels == rd.LABEL_RIGHT)].mean()
    return min(left, right) >= 0.25 * hands and sample.overlap_depth_m > 0 and bright > 90


def find_seed(start: int = SEARCH_START, tries: int = 50) -> int:
    for seed in range(start, start + tries):
        if _is_nice(generate_sample(seed, CONFIG)):
            return seed
    raise RuntimeError("no suitable seed found")


def write_bundled_sample(out_dir: Path = DEFAULT_OUT, seed: int = BUNDLED_SEED) -> Path:
    sample = generate_sample(seed, CONFIG)
    out_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_dir / "image.png"), sample.image[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    frame = KeypointFrame(keypoints=sample.keypoints, image="image.png")
    return save_keypoints_json(out_dir / "keypoints.json", [frame], sample.camera)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--search", action="store_true", help="search a new seed instead of the fixed one")
    args = parser.parse_args(argv)
    seed = find_seed() if args.search else BUNDLED_SEED
    path = write_bundled_sample(args.out, seed)
    print(f"wrote {path} and {path.parent / 'image.png'} (seed {seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
