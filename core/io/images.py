"""Reading images as RGB uint8 arrays (the engine's input type)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import ImageError


def load_image_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB. Greyscale images are repeated over 3 channels, an alpha channel
    is dropped, 16-bit images are scaled to 8 bits. Raises :class:`ImageError`."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)  # works for non-ASCII paths too
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageError(f"{path} is not an image this program can read (JPEG, PNG, WebP, BMP, TIFF)")
    return as_rgb_uint8(image, bgr=True, source=str(path))


def as_rgb_uint8(image: np.ndarray, *, bgr: bool = False, source: str = "image") -> np.ndarray:
    """Normalise an array to (H, W, 3) uint8 RGB (see :func:`load_image_rgb`)."""
    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"{source}: pixels must be 8-bit (uint8), got {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ImageError(f"{source}: expected an (H, W, 3) colour image, got shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[..., :3]
    if bgr:
        img = img[..., ::-1]
    return np.ascontiguousarray(img)


def save_image_rgb(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB array (format from the suffix)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(as_rgb_uint8(image)[..., ::-1]))
    if not ok:
        raise ImageError(f"cannot encode an image as {path.suffix!r}")
    buf.tofile(path)
    return path
