"""The image side of a reconstruction: checks, the 256 x 256 network crop, a cache key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from core.errors import ImageError
from core.geometry.crop import CropTransform, crop_around_points, crop_image
from core.types import Camera

# A new crop within this fraction of the cached one (origin and scale) reuses the cached
# crop, so dragging a keypoint at the edge of the hands' box keeps the image features.
CROP_REUSE_TOLERANCE = 0.03


def validate_image(image: np.ndarray, camera: Camera) -> np.ndarray:
    """Raise :class:`ImageError` unless ``image`` is (H, W, 3) uint8 matching the camera."""
    if not isinstance(image, np.ndarray):
        raise ImageError(
            f"the image must be a numpy array (H, W, 3) of uint8 RGB, got {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        channels = 1 if image.ndim == 2 else (image.shape[2] if image.ndim == 3 else "?")
        raise ImageError(
            f"the image must have 3 colour channels (H, W, 3 RGB); "
            f"got shape {image.shape} ({channels} channels)"
        )
    if image.dtype != np.uint8:
        raise ImageError(f"the image must hold 8-bit pixels (uint8), got {image.dtype}")
    h, w = image.shape[:2]
    if (w, h) != (int(camera.width), int(camera.height)):
        raise ImageError(
            f"the image is {w}x{h} pixels but the camera is for {camera.width}x{camera.height}; "
            "use the camera of this image (or Camera.default_for_image)"
        )
    return image


def image_digest(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest() + str(image.shape)


@dataclass
class NetworkCrop:
    crop_u8: np.ndarray  # (256, 256, 3) uint8
    cam_K_crop: np.ndarray  # (3, 3) intrinsics of the crop (same camera frame)
    transform: CropTransform


def crop_for_keypoints(camera: Camera, joints_cam_m: list[np.ndarray]) -> CropTransform:
    """The reference crop: both hands' projected keypoints fill 80 % of a 256 px square."""
    uv = camera.project(np.concatenate(joints_cam_m, axis=0))
    return crop_around_points(uv)


def crops_close(a: CropTransform, b: CropTransform, tolerance: float = CROP_REUSE_TOLERANCE) -> bool:
    side = b.side_in_image_px
    shift = np.abs(np.subtract(a.origin_px, b.origin_px)).max() / side
    return a.size == b.size and shift <= tolerance and abs(a.scale / b.scale - 1.0) <= tolerance


def make_network_crop(image: np.ndarray, camera: Camera, transform: CropTransform) -> NetworkCrop:
    return NetworkCrop(crop_image(image, transform), transform.crop_intrinsics(camera.K), transform)
