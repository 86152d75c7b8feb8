"""Reading images as RGB uint8 arrays (the engine's input type).

Every image read honours its EXIF orientation (a phone photo comes out the way it is
shown), and is refused before decoding when it holds more than :data:`MAX_IMAGE_PIXELS`."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from core.errors import ImageError
from core.io.atomic import atomic_path

MAX_IMAGE_PIXELS = 100_000_000  # 100 MP: far above any camera photo, far below a decompression bomb
EXIF_ORIENTATION_TAG = 0x0112


def _header_size_and_orientation(data: bytes, source: str) -> tuple[tuple[int, int] | None, int]:
    """(width, height) from the file header (None when Pillow cannot parse it) and the EXIF
    orientation (1 when absent)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            try:
                orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1))
            except Exception:  # a damaged EXIF block must not hide the pixels
                orientation = 1
    except Image.DecompressionBombError:
        return (MAX_IMAGE_PIXELS + 1, 1), 1
    except Exception:  # Pillow does not know every format OpenCV reads
        return None, 1
    return size, orientation if 1 <= orientation <= 8 else 1


def check_pixel_count(width: int, height: int, source: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{source}: {width}x{height} pixels ({width * height / 1e6:.0f} MP) exceeds the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP; scale the image down"
        )


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into the displayed image for EXIF orientation 1..8."""
    if orientation in (2, 4, 5, 7):  # the mirrored ones: mirror first, then rotate as 1/3/8/6
        image = image[:, ::-1]
        orientation = {2: 1, 4: 3, 5: 8, 7: 6}[orientation]
    turns = {1: 0, 3: 2, 6: 3, 8: 1}[orientation]  # np.rot90 turns counter-clockwise
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def load_image_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied. Greyscale images are repeated over 3
    channels, an alpha channel is dropped, 16-bit images are scaled to 8 bits. Raises
    :class:`ImageError` (also for more than :data:`MAX_IMAGE_PIXELS` pixels)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        data = path.read_bytes()  # works for non-ASCII paths too
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    size, orientation = _header_size_and_orientation(data, str(path)) if data else (None, 1)
    if size is not None:
        check_pixel_count(size[0], size[1], str(path))
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    except cv2.error as exc:
        raise ImageError(f"{path} cannot be decoded: {str(exc).strip().splitlines()[-1]}") from None
    if image is None:
        raise ImageError(f"{path} is not an image this program can read (JPEG, PNG, WebP, BMP, TIFF)")
    check_pixel_count(image.shape[1], image.shape[0], str(path))
    return apply_exif_orientation(as_rgb_uint8(image, bgr=True, source=str(path)), orientation)


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


def save_image_rgb(path: str | Path, image: np.ndarray, file_format: str | None = None) -> Path:
    """Write an (H, W, 3) uint8 RGB array atomically (format from ``file_format`` such as
    ``".png"``, else the suffix)."""
    import cv2

    path = Path(path)
    suffix = file_format or path.suffix or ".png"
    try:
        ok, buf = cv2.imencode(suffix, np.ascontiguousarray(as_rgb_uint8(image)[..., ::-1]))
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError(f"cannot encode an image as {suffix!r}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path
