"""A second opinion on 2D hands: the trained image encoder's heatmaps and masks in a crop.

MediaPipe finds hands one at a time and misses some in tight interaction (interlaced fingers,
palms pressed together). The image encoder that K, I and R share was trained on two-hand crops
to predict both hands' 42 joint heatmaps and two masks, so reading it in a crop around the
hands found (or around a box the user drew) gives each side's 2D joints with a confidence.

Conservative by design, because it must not add false hands: a side counts as present only
when its mask covers a hand-like share of the crop, its joints' heatmaps are concentrated
single peaks of about the trained height, and most of its joints fall on its own mask
(:class:`PresenceRule`). An untrained encoder passes none of this (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.geometry.crop import CropTransform, crop_image
from core.hand.joints import HAND_SIDES
from core.models.flip_test import flip_averaged
from core.models.heatmap_readout import heatmap_peaks
from core.models.image_encoder import normalize_image

JOINTS_PER_HAND = 21


@dataclass(frozen=True)
class PresenceRule:
    """When a side's read-out is taken as a hand (all three must hold)."""

    mask_fraction: tuple[float, float] = (0.01, 0.6)  # of the 256 x 256 crop
    mean_peak: tuple[float, float] = (0.35, 1.5)  # mean heatmap peak of the 21 joints (targets: 1)
    min_concentration: float = 0.5  # mean share of a map's positive mass near its peak
    min_joints_on_mask: float = 0.6  # fraction of its joints on its own predicted mask
    peak_radius: int = 4  # map cells around the peak counted as "near" (targets: sigma 1.5)


@dataclass
class EncoderHand2D:
    side: str
    joints_px: np.ndarray  # (21, 2) image pixels, mano order
    confidence: np.ndarray  # (21,) heatmap peak per joint
    mask_fraction: float  # of the crop
    joints_on_mask: float  # fraction of the joints on the side's own mask
    concentration: float  # mean share of each joint map's positive mass near its peak
    present: bool


def peak_concentration(heatmaps: np.ndarray, xy: np.ndarray, radius: int) -> np.ndarray:
    """(J,) share of each (H, W) map's positive mass within ``radius`` cells of its peak
    ``xy`` (J, 2): close to 1 for a trained single Gaussian, low for a diffuse map."""
    positive = np.clip(heatmaps, 0, None)
    h, w = heatmaps.shape[-2:]
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    near = (np.abs(rows - xy[:, 1, None, None]) <= radius) & (np.abs(cols - xy[:, 0, None, None]) <= radius)
    total = positive.sum(axis=(1, 2))
    return np.where(total > 0, (positive * near).sum(axis=(1, 2)) / np.maximum(total, 1e-12), 0.0)


def _read_crop(encoder: torch.nn.Module, crop_u8: np.ndarray, flip_test: bool = False):
    with torch.no_grad():
        image = normalize_image(torch.from_numpy(np.ascontiguousarray(crop_u8))[None])
        out = flip_averaged(encoder, image) if flip_test else encoder(image)
    xy, peak = heatmap_peaks(out.hms[0])
    return out.hms[0].numpy(), xy.numpy(), peak.numpy(), (out.mask[0] > 0).numpy()


def read_hands_in_crop(
    encoder: torch.nn.Module,
    image_rgb: np.ndarray,
    transform: CropTransform,
    rule: PresenceRule | None = None,
    flip_test: bool = False,
) -> dict[str, EncoderHand2D]:
    """Both sides' 2D joints read from the encoder in the crop ``transform`` of the image;
    ``flip_test``: from the maps averaged with the mirrored crop's (:mod:`core.models.flip_test`;
    the presence rule's thresholds were set without it)."""
    rule = rule or PresenceRule()
    crop = crop_image(image_rgb, transform)
    heat, xy, peak, masks = _read_crop(encoder, crop, flip_test)
    map_size = masks.shape[-1]
    stride = transform.size / map_size
    hands = {}
    for k, side in enumerate(HAND_SIDES):
        sl = slice(k * JOINTS_PER_HAND, (k + 1) * JOINTS_PER_HAND)
        cells = np.clip(np.round(xy[sl]).astype(int), 0, map_size - 1)
        on_mask = float(masks[k][cells[:, 1], cells[:, 0]].mean())
        fraction = float(masks[k].mean())
        joints_px = transform.crop_to_image(xy[sl] * stride + stride / 2)
        concentration = float(peak_concentration(heat[sl], xy[sl], rule.peak_radius).mean())
        present = (
            rule.mask_fraction[0] <= fraction <= rule.mask_fraction[1]
            and rule.mean_peak[0] <= float(peak[sl].mean()) <= rule.mean_peak[1]
            and concentration >= rule.min_concentration
            and on_mask >= rule.min_joints_on_mask
        )
        hands[side] = EncoderHand2D(
            side, joints_px, peak[sl].astype(np.float64), fraction, on_mask, concentration, present
        )
    return hands
