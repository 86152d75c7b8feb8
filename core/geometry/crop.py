"""The square network crop around both hands (pure numpy).

The networks see a 256 x 256 crop in which the union bounding box of both hands fills
``bbox_ratio`` = 80 % of the side (the reference preprocessing's ``HAND_BBOX_RATIO``):
half-side ``L = max(box extent) / 2 / bbox_ratio`` around the box centre, then a uniform
scale ``size / (2 L)``. The crop is a pure scale + shift of pixel coordinates, so the
crop camera is the full camera with ``fx, fy, cx, cy`` scaled and ``cx, cy`` shifted;
3D points in the camera frame do not change.

Pixel convention (as in :mod:`core.types`): continuous coordinates with the origin at the
top-left *corner* of the top-left pixel, so pixel ``(i, j)`` has its centre at
``(i + 0.5, j + 0.5)``. The map ``u_crop = scale * (u_image - x0)`` is then exact for
points, intrinsics and image resampling alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NETWORK_CROP_SIZE = 256
HAND_BBOX_RATIO = 0.8


@dataclass(frozen=True)
class CropTransform:
    """``u_crop = scale * (u_image - origin_px)``: a square crop of side ``size`` pixels
    whose top-left corner sits at ``origin_px`` (image pixels) and that covers
    ``size / scale`` image pixels per side."""

    origin_px: tuple[float, float]
    scale: float
    size: int = NETWORK_CROP_SIZE

    @property
    def side_in_image_px(self) -> float:
        return self.size / self.scale

    def image_to_crop(self, uv_image: np.ndarray) -> np.ndarray:
        """(..., 2) image pixels -> (..., 2) crop pixels."""
        uv = np.asarray(uv_image, dtype=np.float64)
        return self.scale * (uv - np.asarray(self.origin_px))

    def crop_to_image(self, uv_crop: np.ndarray) -> np.ndarray:
        """(..., 2) crop pixels -> (..., 2) image pixels."""
        uv = np.asarray(uv_crop, dtype=np.float64)
        return uv / self.scale + np.asarray(self.origin_px)

    def crop_intrinsics(self, K_image: np.ndarray) -> np.ndarray:
        """3x3 intrinsics of the full image -> intrinsics of the crop (same camera frame)."""
        K = np.array(K_image, dtype=np.float64)
        A = self.affine_matrix()
        return A @ K

    def image_intrinsics(self, K_crop: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`crop_intrinsics`."""
        return np.linalg.inv(self.affine_matrix()) @ np.asarray(K_crop, dtype=np.float64)

    def affine_matrix(self) -> np.ndarray:
        """3x3 homogeneous map image pixels -> crop pixels."""
        s = self.scale
        x0, y0 = self.origin_px
        return np.array([[s, 0.0, -s * x0], [0.0, s, -s * y0], [0.0, 0.0, 1.0]])


def crop_around_points(
    points_px: np.ndarray,
    size: int = NETWORK_CROP_SIZE,
    bbox_ratio: float = HAND_BBOX_RATIO,
    min_side_px: float = 8.0,
) -> CropTransform:
    """The square crop in which the bounding box of ``points_px`` ((N, 2) image pixels,
    e.g. both hands' projected keypoints or mesh vertices) fills ``bbox_ratio`` of the
    longer side, centred on the box centre. ``min_side_px`` guards degenerate boxes."""
    pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        raise ValueError("crop_around_points needs at least one finite point")
    if not 0 < bbox_ratio <= 1:
        raise ValueError(f"bbox_ratio must be in (0, 1], got {bbox_ratio}")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2
    half_side = max(float(np.max(hi - lo)), min_side_px) / 2 / bbox_ratio
    origin = centre - half_side
    origin_px = (float(origin[0]), float(origin[1]))
    return CropTransform(origin_px=origin_px, scale=size / (2 * half_side), size=size)


def crop_image(image: np.ndarray, transform: CropTransform, fill: float = 0.0) -> np.ndarray:
    """Resample ``image`` ((H, W) or (H, W, C), any dtype) into the ``size x size`` crop
    with bilinear interpolation; pixels outside the image get ``fill``. When the crop
    shrinks the image by more than 2x, the image is box-averaged first so small hands
    are not aliased."""
    img = np.asarray(image)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[..., None]
    src = img.astype(np.float32)
    scale = transform.scale
    factor = int(np.floor(1.0 / scale)) if scale < 0.5 else 1
    if factor > 1:  # integer box-downsampling, then an adjusted transform
        h, w = (src.shape[0] // factor) * factor, (src.shape[1] // factor) * factor
        src = src[:h, :w].reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))
        x0, y0 = transform.origin_px
        transform = CropTransform((x0 / factor, y0 / factor), scale * factor, transform.size)

    n = transform.size
    centres = np.arange(n, dtype=np.float64) + 0.5
    u = transform.crop_to_image(np.stack([centres, np.zeros(n)], axis=-1))[:, 0] - 0.5  # index space
    v = transform.crop_to_image(np.stack([np.zeros(n), centres], axis=-1))[:, 1] - 0.5
    out = _bilinear_separable(src, v, u, fill)
    out = out[..., 0] if squeeze else out
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(img.dtype)


def _bilinear_separable(src: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill: float) -> np.ndarray:
    """Sample ``src`` (H, W, C) at the grid rows x cols (index coordinates, pixel centres at
    integers) bilinearly; samples outside [-0.5, size - 0.5] get ``fill``."""
    h, w = src.shape[:2]

    def weights(coords: np.ndarray, limit: int):
        base = np.floor(coords)
        frac = coords - base
        i0 = np.clip(base.astype(np.int64), 0, limit - 1)
        i1 = np.clip(base.astype(np.int64) + 1, 0, limit - 1)
        inside = (coords >= -0.5) & (coords <= limit - 0.5)
        return i0, i1, frac, inside

    r0, r1, fr, rin = weights(rows, h)
    c0, c1, fc, cin = weights(cols, w)
    fr = fr[:, None, None]
    fc = fc[None, :, None]
    top = src[r0][:, c0] * (1 - fc) + src[r0][:, c1] * fc
    bottom = src[r1][:, c0] * (1 - fc) + src[r1][:, c1] * fc
    out = top * (1 - fr) + bottom * fr
    mask = rin[:, None] & cin[None, :]
    out[~mask] = fill
    return out
