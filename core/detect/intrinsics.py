"""Camera intrinsics for an image, in this order of preference:

1. a camera file: an InterHand2.6M ``*_camera.json`` (``{capture: {focal, princpt,
   campos, camrot}}``; pick the capture / camera by name when it holds several), or our
   own ``{"K": 3x3, "width": W, "height": H}`` (also the ``camera`` entry of a keypoint
   file);
2. the photo's EXIF: ``FocalLengthIn35mmFilm`` (35 mm-equivalent focal length, defined
   on the 43.27 mm diagonal of a 36 x 24 mm frame), else ``FocalLength`` with
   ``FocalPlaneXResolution`` and the ``PixelXDimension`` it refers to;
3. :meth:`core.types.Camera.default_for_image`: principal point at the centre and a 50
   degree field of view over the longer side.

Extrinsics: a file camera keeps ``R``/``T`` (metres) only for reference; keypoints are
returned in the camera frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.types import Camera

FULL_FRAME_DIAGONAL_MM = float(np.hypot(36.0, 24.0))


class CameraFileError(InputError):
    """A camera file that does not parse or does not name the camera to use."""


def camera_from_file(path: str | Path, width: int, height: int, capture: str | None = None,
                     camera_name: str | None = None, image_name: str | None = None) -> Camera:
    """Intrinsics (and extrinsics, metres) for a ``width`` x ``height`` image from a file.
    For an InterHand2.6M camera file holding several cameras, the capture and camera are
    taken from the arguments, else looked up by ``image_name`` in a sibling ``*_data.json``."""
    from core.io.keypoints import check_camera_values, reading

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise CameraFileError(f"cannot read camera file {path}: {exc}") from None
    with reading(path, CameraFileError):  # any malformed field: our error naming the file
        camera = _camera_from_data(data, path, width, height, capture, camera_name, image_name)
    check_camera_values(camera.K, camera.width, camera.height, f"camera file {path}", CameraFileError)
    return camera


def _camera_from_data(data, path: Path, width: int, height: int, capture, camera_name, image_name) -> Camera:
    if not isinstance(data, dict):
        raise CameraFileError(f"camera file {path} must hold a JSON object")
    if isinstance(data.get("camera"), dict) and "K" in data["camera"]:
        data = data["camera"]
    if "K" in data:
        K = np.asarray(data["K"], dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise CameraFileError(f"camera file {path}: 'K' must be a 3x3 matrix with positive focal lengths")
        file_w, file_h = data.get("width", width), data.get("height", height)
        if (int(file_w), int(file_h)) != (width, height):
            sx, sy = width / float(file_w), height / float(file_h)
            K = np.diag([sx, sy, 1.0]) @ K  # same camera, resized image
        return Camera(K=K, width=width, height=height)
    if image_name is not None and (capture is None or camera_name is None):
        found = _interhand_image_record(path, image_name)
        if found is not None:
            capture = capture if capture is not None else found[0]
            camera_name = camera_name if camera_name is not None else found[1]
    return _interhand_camera(data, path, width, height, capture, camera_name)


def _interhand_image_record(camera_path: Path, image_name: str) -> tuple[str, str] | None:
    """(capture, camera) of ``image_name`` from an InterHand2.6M ``*_data.json`` next to
    the camera file, or None."""
    for data_path in sorted(camera_path.parent.glob("*_data.json")):
        try:
            images = json.loads(data_path.read_text()).get("images", [])
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        for rec in images:
            if isinstance(rec, dict) and Path(str(rec.get("file_name", ""))).name == image_name:
                return str(rec.get("capture")), str(rec.get("camera"))
    return None


def _pick(options: dict, wanted: str | None, what: str, path: Path) -> str:
    keys = [str(k) for k in options]
    if wanted is not None:
        if str(wanted) not in keys:
            raise CameraFileError(f"{what} {wanted!r} is not in {path}; it holds {', '.join(keys[:20])}")
        return str(wanted)
    if len(keys) != 1:
        raise CameraFileError(
            f"{path} holds {len(keys)} {what}s ({', '.join(keys[:20])}); name one with --camera-{what}"
        )
    return keys[0]


def _interhand_camera(data: dict, path: Path, width: int, height: int, capture: str | None,
                      camera_name: str | None) -> Camera:
    try:
        cap = _pick(data, capture, "capture", path)
        block = data[cap]
        cam = _pick(block["focal"], camera_name, "camera", path)
        fx, fy = (float(x) for x in block["focal"][cam])
        cx, cy = (float(x) for x in block["princpt"][cam])
        R = np.asarray(block["camrot"][cam], dtype=np.float64)
        campos_m = np.asarray(block["campos"][cam], dtype=np.float64) / 1000.0
    except (KeyError, TypeError, ValueError) as exc:
        raise CameraFileError(
            f"{path} is neither an InterHand2.6M camera file nor a {{'K', 'width', 'height'}} file ({exc})"
        ) from exc
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    # X_cam = R (X_world - campos) = R X_world - R campos
    return Camera(K=K, width=width, height=height, R=R, T=-R @ campos_m)


def camera_from_exif(image_path: str | Path, width: int, height: int) -> Camera | None:
    """Intrinsics from EXIF focal length, or ``None`` when the file has none usable."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with torchvision
        return None
    try:
        with Image.open(image_path) as im:
            exif = im.getexif()
            sub = exif.get_ifd(0x8769)  # Exif IFD holds the focal lengths
            turned = exif.get(0x0112, 1) in (5, 6, 7, 8)  # shown turned by 90 degrees
    except (OSError, ValueError, TypeError):
        return None
    f35 = _positive(sub.get(0xA405))  # FocalLengthIn35mmFilm
    f_px = None
    if f35:
        f_px = f35 / FULL_FRAME_DIAGONAL_MM * float(np.hypot(width, height))
    else:
        f_mm = _positive(sub.get(0x920A))  # FocalLength
        x_res = _positive(sub.get(0xA20E))  # FocalPlaneXResolution (pixels per unit)
        unit = sub.get(0xA210, 2)  # FocalPlaneResolutionUnit: 2 inch, 3 cm, 4 mm
        mm_per_unit = {2: 25.4, 3: 10.0, 4: 1.0}.get(int(unit) if unit else 2)
        orig_w = _positive(sub.get(0xA002))  # PixelXDimension the resolution refers to
        # The focal-plane resolution refers to the camera's own pixel grid; without the
        # width it refers to (resized photos often drop it) the focal length is unusable.
        if f_mm and x_res and mm_per_unit and orig_w:
            stored_width = height if turned else width  # PixelXDimension is of the stored pixels
            f_px = f_mm * x_res / mm_per_unit * stored_width / orig_w
    if not f_px or not np.isfinite(f_px):
        return None
    K = np.array([[f_px, 0.0, width / 2], [0.0, f_px, height / 2], [0.0, 0.0, 1.0]])
    return Camera(K=K, width=width, height=height)


def _positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def camera_for_image(width: int, height: int, camera_path: str | Path | None = None,
                     image_path: str | Path | None = None, capture: str | None = None,
                     camera_name: str | None = None) -> tuple[Camera, str]:
    """The camera to use and where it came from: ``"file"``, ``"exif"`` or ``"default"``."""
    if camera_path is not None:
        name = None if image_path is None else Path(image_path).name
        return camera_from_file(camera_path, width, height, capture, camera_name, name), "file"
    if image_path is not None:
        cam = camera_from_exif(image_path, width, height)
        if cam is not None:
            return cam, "exif"
    return Camera.default_for_image(width, height), "default"
