"""2D supervision of the image encoder from a synthetic render, and its augmentation.

A render carries its 2D ground truth for free (IntagHand trains its encoder on the same
three kinds): the 42 joints projected into the crop (left hand 0-20, right 21-41, mano order),
the two hand masks, and dense surface coordinates (each visible hand pixel's surface point in
that hand's HALO canonical frame, normalised units / 0.55, so roughly in [-1, 1]; channels
0-2 left, 3-5 right). Everything here is numpy on one sample; the training module batches it.

Pixel convention (as :class:`core.types.Camera` and the rasteriser): pixel ``(i, j)`` is
centred at ``(i + 0.5, j + 0.5)``. The encoder's 64 px maps have cells of 4 crop pixels, so
cell ``c`` is centred at crop coordinate ``4 c + 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from core.geometry.canonical import canonicalize_hand, posed_m_to_canon_norm
from core.hand.joints import HAND_SIDES, NUM_JOINTS
from core.synth.render import LABEL_BACKGROUND, LABEL_LEFT, LABEL_RIGHT
from core.synth.samples import SynthSample

MAP_SIZE = 64  # side of the encoder's heatmaps, masks and dense maps
DENSE_SCALE = 0.55  # the canonical occupancy box half-size: dense targets / this ~ [-1, 1]
HAND_LABELS = {"left": LABEL_LEFT, "right": LABEL_RIGHT}


def crop_to_map(uv: np.ndarray, image_size: int, map_size: int = MAP_SIZE) -> np.ndarray:
    """Crop pixel coordinates -> map cell coordinates (cell centres at integers)."""
    stride = image_size / map_size
    return (np.asarray(uv, dtype=np.float64) - stride / 2) / stride


def map_to_crop(xy: np.ndarray, image_size: int, map_size: int = MAP_SIZE) -> np.ndarray:
    """Inverse of :func:`crop_to_map`."""
    stride = image_size / map_size
    return np.asarray(xy, dtype=np.float64) * stride + stride / 2


@dataclass
class EncoderSample:
    """One training or test item of the encoder, at crop resolution."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    joints_uv: np.ndarray  # (42, 2) crop pixels, left then right
    labels: np.ndarray  # (S, S) uint8 render labels
    dense: np.ndarray  # (S, S, 3) float32: the visible hand's canonical coordinates / 0.55


def projected_joints(sample: SynthSample) -> np.ndarray:
    """(42, 2) crop pixels of the ground-truth joints, left hand first."""
    return np.concatenate([sample.camera.project(sample.keypoints.hand(s)) for s in HAND_SIDES])


def dense_coordinates(sample: SynthSample) -> np.ndarray:
    """(S, S, 3) canonical coordinates of each visible hand pixel (zeros elsewhere), from the
    render's depth: back-project the pixel centre, then into that hand's HALO frame."""
    if sample.depth_m is None:
        raise ValueError(f"sample {sample.seed} has no depth map (written before depth was stored)")
    size = sample.labels.shape[0]
    dense = np.zeros((size, size, 3), dtype=np.float32)
    for side in HAND_SIDES:
        rows, cols = np.nonzero(sample.labels == HAND_LABELS[side])
        if rows.size == 0:
            continue
        pix = np.stack([cols + 0.5, rows + 0.5, np.ones(rows.size)], axis=1)
        rays = pix @ np.linalg.inv(sample.camera.K).T
        points = rays * sample.depth_m[rows, cols, None]
        halo = canonicalize_hand(sample.keypoints.hand(side), side)
        canon = posed_m_to_canon_norm(torch.as_tensor(points), halo.root_rot_mat, halo.wrist_m, side)
        dense[rows, cols] = canon.numpy() / DENSE_SCALE
    return dense


def encoder_sample(sample: SynthSample) -> EncoderSample:
    return EncoderSample(sample.image, projected_joints(sample), sample.labels, dense_coordinates(sample))


# ----------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    """Strong photometric and geometric augmentation. The geometric part imitates the
    detector crop's errors (box scale and centre off by a fraction of the box) plus a small
    in-plane rotation; the photometric part covers camera and compression differences."""

    scale_range: tuple[float, float] = (0.8, 1.25)  # zoom factor (log-uniform)
    shift_fraction: float = 0.08  # centre jitter, fraction of the crop side
    rotation_deg: float = 15.0
    brightness: float = 0.3  # multiplicative, +-
    contrast: float = 0.3
    saturation: float = 0.4
    hue_deg: float = 10.0
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.4, 1.8)
    noise_sigma: tuple[float, float] = (0.0, 8.0)  # grey levels
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (25, 95)
    grey_prob: float = 0.05
    # Horizontal flip with the sides swapped: a mirrored left hand is a right hand (HALO
    # canonicalizes left hands x-mirrored, so its dense coordinates carry over unchanged).
    flip_prob: float = 0.0
    # Dark studio frames (InterHand2.6M's cameras: a lit hand before a near-black room, often
    # monochrome): with this probability the background pixels, from the render's labels, are
    # scaled by a factor drawn from ``background_dim_range``; drawn before the photometric
    # changes, which then act on the whole image alike.
    background_dim_prob: float = 0.0
    background_dim_range: tuple[float, float] = (0.05, 0.6)
    # One-hand crops: with this probability the crop is first reframed on one hand (side drawn
    # at random), its joints' box filling ``one_hand_fill`` of the crop as the engine frames a
    # lone hand; the jitter above then applies as usual. The renders always frame both hands,
    # but a photo with one hand (or a detector box on one hand) gives a crop with a single,
    # larger hand; the encoder had never seen one and took lone hands for the other side.
    one_hand_prob: float = 0.0
    one_hand_fill: float = 0.8


def _dim_background(rng: np.random.Generator, cfg: AugmentConfig, image: np.ndarray,
                    labels: np.ndarray) -> np.ndarray:
    if cfg.background_dim_prob <= 0 or rng.random() >= cfg.background_dim_prob:  # no draw when off
        return image
    factor = float(rng.uniform(*cfg.background_dim_range))
    out = image.astype(np.float32)
    out[labels == LABEL_BACKGROUND] *= factor
    return np.clip(out, 0, 255).astype(np.uint8)


def _affine(rng: np.random.Generator, cfg: AugmentConfig, size: int) -> np.ndarray:
    scale = float(np.exp(rng.uniform(*np.log(cfg.scale_range))))
    angle = float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    centre = (size / 2, size / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += rng.uniform(-cfg.shift_fraction, cfg.shift_fraction, 2) * size
    return matrix


def _one_hand_frame(rng: np.random.Generator, cfg: AugmentConfig, joints_uv: np.ndarray,
                    size: int) -> np.ndarray | None:
    """A (3, 3) affine of pixel indices that centres one hand's joint box in the crop at
    ``one_hand_fill`` of its side, or None (no draw at all when the option is off)."""
    if cfg.one_hand_prob <= 0 or rng.random() >= cfg.one_hand_prob:
        return None
    side = int(rng.integers(2))
    uv = joints_uv[side * NUM_JOINTS:(side + 1) * NUM_JOINTS] - 0.5  # -> pixel-index coordinates
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    scale = cfg.one_hand_fill * size / max(float((hi - lo).max()), 1.0)
    centre = (lo + hi) / 2
    offset = (size - 1) / 2 - scale * centre
    return np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]], [0.0, 0.0, 1.0]])


def _photometric(rng: np.random.Generator, cfg: AugmentConfig, image: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue_deg, cfg.hue_deg) / 2) % 180  # OpenCV hue: 0..180
    hsv[..., 1] *= rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    img *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    if rng.random() < cfg.grey_prob:
        img[:] = img.mean(axis=2, keepdims=True)
    if rng.random() < cfg.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(*cfg.blur_sigma)))
    img += rng.normal(0, rng.uniform(*cfg.noise_sigma), img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < cfg.jpeg_prob:
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)


def augment(item: EncoderSample, rng: np.random.Generator, cfg: AugmentConfig) -> EncoderSample:
    """A randomly warped and recoloured copy (new arrays; ``item`` is not changed). Uncovered
    border pixels take one random colour and the background label."""
    size = item.image.shape[0]
    frame = _one_hand_frame(rng, cfg, item.joints_uv, size)
    matrix = _affine(rng, cfg, size)
    if frame is not None:  # reframe first, then the usual jitter
        matrix = (np.vstack([matrix, [0.0, 0.0, 1.0]]) @ frame)[:2]
    fill = tuple(int(c) for c in rng.integers(0, 256, 3))
    image = cv2.warpAffine(item.image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=fill)
    labels = cv2.warpAffine(item.labels, matrix, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
    dense = cv2.warpAffine(item.dense, matrix, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
    # The rasteriser's pixel centres sit at +0.5; cv2 warps pixel indices.
    uv = (item.joints_uv - 0.5) @ matrix[:, :2].T + matrix[:, 2] + 0.5
    if cfg.flip_prob > 0 and rng.random() < cfg.flip_prob:  # no draw when off: older runs replay
        image, labels, dense, uv = flip_sides(image, labels, dense, uv)
    image = _dim_background(rng, cfg, image, labels)
    return EncoderSample(_photometric(rng, cfg, image), uv, labels, dense)


def flip_sides(
    image: np.ndarray, labels: np.ndarray, dense: np.ndarray, joints_uv: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mirror a crop left-right and swap the hands: joints 0-20 <-> 21-41, labels left <->
    right. Pixel ``i`` (centre ``i + 0.5``) goes to ``S - 1 - i``, so ``u -> S - u``."""
    size = image.shape[1]
    swapped = labels[:, ::-1].copy()
    swapped[labels[:, ::-1] == LABEL_LEFT] = LABEL_RIGHT
    swapped[labels[:, ::-1] == LABEL_RIGHT] = LABEL_LEFT
    uv = np.concatenate([joints_uv[NUM_JOINTS:], joints_uv[:NUM_JOINTS]]).copy()
    uv[:, 0] = size - uv[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), swapped, np.ascontiguousarray(dense[:, ::-1]), uv


# ----------------------------------------------------------------------------------------
# Targets at map resolution
# ----------------------------------------------------------------------------------------
@dataclass
class EncoderTargets:
    heatmaps: np.ndarray  # (42, 64, 64) float32 Gaussians, zero for joints outside the crop
    joint_inside: np.ndarray  # (42,) bool
    joints_xy: np.ndarray  # (42, 2) float32 map-cell coordinates (cell centres at integers)
    masks: np.ndarray  # (2, 64, 64) float32 fraction of each cell covered by the hand
    dense: np.ndarray  # (6, 64, 64) float32 mean canonical coordinates of the hand's pixels


def joint_heatmaps(joints_uv: np.ndarray, image_size: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmaps (J, 64, 64) with peak 1 at each joint's map position (``sigma`` in map
    cells), and which joints lie inside the crop (the others get an all-zero map)."""
    xy = crop_to_map(joints_uv, image_size)
    inside = np.all((joints_uv >= 0) & (joints_uv < image_size), axis=1)
    grid = np.arange(MAP_SIZE, dtype=np.float64)
    gx = np.exp(-((grid[None, :] - xy[:, :1]) ** 2) / (2 * sigma**2))  # (J, W)
    gy = np.exp(-((grid[None, :] - xy[:, 1:]) ** 2) / (2 * sigma**2))  # (J, H)
    heat = gy[:, :, None] * gx[:, None, :]
    heat[~inside] = 0
    return heat.astype(np.float32), inside


def map_targets(item: EncoderSample, sigma: float) -> EncoderTargets:
    size = item.image.shape[0]
    heat, inside = joint_heatmaps(item.joints_uv, size, sigma)
    masks, dense = [], []
    for side in HAND_SIDES:
        mask = (item.labels == HAND_LABELS[side]).astype(np.float32)
        cover = cv2.resize(mask, (MAP_SIZE, MAP_SIZE), interpolation=cv2.INTER_AREA)
        summed = cv2.resize(item.dense * mask[..., None], (MAP_SIZE, MAP_SIZE), interpolation=cv2.INTER_AREA)
        dense.append((summed / np.maximum(cover, 1e-6)[..., None]).transpose(2, 0, 1) * (cover > 0))
        masks.append(cover)
    xy = crop_to_map(item.joints_uv, size).astype(np.float32)
    return EncoderTargets(heat, inside, xy, np.stack(masks), np.concatenate(dense).astype(np.float32))
