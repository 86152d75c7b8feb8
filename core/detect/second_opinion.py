"""The image encoder as a second opinion when the detector finds one hand of two.

MediaPipe misses a hand most often when the two interact (interlaced fingers, palms pressed
together), which is exactly when the missing hand lies next to the one found. So when only
one side is found, :class:`EncoderSecondOpinion` reads the trained image encoder
(:mod:`.encoder_hands`) in a few crops around that hand and adds the other side only if the
encoder's conservative presence rule holds there and its joints are not the found hand
read again. It never adds a hand to an image where the detector found none, and never
replaces a hand the detector found.

An added hand has no 3D shape of its own: its ``world_m`` is its 2D landmarks flattened into
a plane facing the camera at a typical hand size, so the skeleton fit takes the bones' depth
directions from its prior, and its ``label_score`` (the encoder's mean heatmap peak, at most
``score_cap``) keeps its joints' confidence low: the app shows them as weak joints.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from core.detect.detector import HandDetection, HandDetector, ImageDetection, check_rgb_image, same_hand
from core.detect.encoder_hands import EncoderHand2D, PresenceRule, read_hands_in_crop
from core.geometry.crop import CropTransform, crop_around_points
from core.hand.joints import MANO_WRIST

SOURCE = "encoder"
# Wrist to middle-finger tip of an adult hand (~0.19 m; the prior's mean would do as well):
# only sets the scale of the flat stand-in shape, which the skeleton fit rescales anyway.
FLAT_HAND_LENGTH_M = 0.19
MIDDLE_TIP = 12


@dataclass(frozen=True)
class SecondOpinionOptions:
    """Where to look for the missing hand, relative to the hand found."""

    # The crop's side in found-hand sizes: the found hand fills 1/2 of it, leaving room for
    # a second hand of the same size beside it (the encoder saw two hands filling 80 %).
    crop_hands: float = 2.0
    # Crop centres, shifted from the found hand's centre by these multiples of its size.
    shifts: tuple[tuple[float, float], ...] = ((0.0, 0.0), (-0.5, 0.0), (0.5, 0.0), (0.0, -0.5), (0.0, 0.5))
    score_cap: float = 0.5  # an added hand's detector score is at most this
    rule: PresenceRule = field(default_factory=PresenceRule)


def crops_beside(hand: HandDetection, options: SecondOpinionOptions) -> list[CropTransform]:
    """The crops read for the hand missing beside ``hand`` (image pixels)."""
    x0, y0, x1, y1 = hand.box_px
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    half = options.crop_hands * hand.size_px / 2
    crops = []
    for dx, dy in options.shifts:
        c = centre + np.array([dx, dy]) * hand.size_px
        crops.append(crop_around_points(np.array([c - half, c + half]), bbox_ratio=1.0))
    return crops


def flat_world_shape(joints_px: np.ndarray) -> np.ndarray:
    """(21, 3) metres, centred: the 2D joints in a plane facing the camera, scaled so that the
    wrist-to-middle-tip distance is a typical hand's (no depth evidence of its own)."""
    uv = np.asarray(joints_px, dtype=np.float64)
    length_px = max(float(np.linalg.norm(uv[MIDDLE_TIP] - uv[MANO_WRIST])), 1.0)
    flat = np.concatenate([uv - uv.mean(axis=0), np.zeros((len(uv), 1))], axis=1)
    return flat * (FLAT_HAND_LENGTH_M / length_px)


def hand_from_encoder(read: EncoderHand2D, score_cap: float) -> HandDetection:
    score = float(np.clip(read.confidence.mean(), 0.0, score_cap))
    return HandDetection(
        landmarks_px=np.asarray(read.joints_px, dtype=np.float64),
        depth_px=np.zeros(len(read.joints_px)),
        world_m=flat_world_shape(read.joints_px),
        side=read.side,
        evidence=score if read.side == "right" else -score,
        label_score=score,
        source=SOURCE,
    )


def best_missing_hand(encoder: torch.nn.Module, image_rgb: np.ndarray, found: HandDetection,
                      options: SecondOpinionOptions) -> EncoderHand2D | None:
    """The other side as the crops where it is present read it, or None. A joint may lie
    outside one crop and inside another, so each joint is taken from the crop whose heatmap
    peaks highest for it."""
    missing = "left" if found.side == "right" else "right"
    reads = []
    for transform in crops_beside(found, options):
        read = read_hands_in_crop(encoder, image_rgb, transform, options.rule)[missing]
        if read.present and not same_hand(read.joints_px, found.landmarks_px, found.size_px):
            reads.append(read)
    if not reads:
        return None
    confidence = np.stack([r.confidence for r in reads])  # (crops, 21)
    best = confidence.argmax(axis=0)
    joints = np.stack([r.joints_px for r in reads])[best, np.arange(confidence.shape[1])]
    surest = max(reads, key=lambda r: float(r.confidence.mean()))
    return replace(surest, joints_px=joints, confidence=confidence.max(axis=0))


@dataclass
class EncoderSecondOpinion:
    """A :class:`HandDetector`: ``primary`` first; where it finds exactly one hand, the
    encoder may add the other side (see the module notes). ``encoder``: a trained image
    encoder (e.g. ``registry.load_image_encoder``), in eval mode."""

    primary: HandDetector
    encoder: torch.nn.Module
    options: SecondOpinionOptions = field(default_factory=SecondOpinionOptions)

    def __post_init__(self) -> None:
        self.encoder.eval()  # BatchNorm with its running statistics: one crop at a time

    def detect(self, image_rgb: np.ndarray) -> ImageDetection:
        detection = self.primary.detect(image_rgb)
        if len(detection.hands) != 1:
            return detection
        image = check_rgb_image(image_rgb)
        read = best_missing_hand(self.encoder, image, detection.hands[0], self.options)
        views = [*detection.views_tried, SOURCE]
        if read is None:
            return replace(detection, views_tried=views)
        added = hand_from_encoder(read, self.options.score_cap)
        return replace(detection, hands=[*detection.hands, added], views_tried=views)
