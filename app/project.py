"""Project files: versioned JSON, written atomically (no Qt).

Layout (``version`` 2; version 1 files, with boolean ``visible`` instead of
``visibility`` and no review flags, are read too)::

    {"format": "im2hands-studio-project", "version": 1,
     "media": {"kind": "image"|"folder"|"video", "path": "<relative to the project file>"} | null,
     "camera": {"K": 3x3, "width": int, "height": int} | null,
     "current_frame": int, "settings": {...}, "weights": "<path>" | null,
     "frames": [{"index": i, "detected": HANDS|null, "edited": HANDS|null,
                 "refined": HANDS|null, "visibility": {"left": [21 x 0|1|2], "right": [...]},
                 "interpolated": bool, "reviewed": bool, "no_hands": bool,
                 "confidence": {"left": [21 x number|null], "right": [...]}  (optional)}]}

    visibility codes (COCO's): 2 visible, 1 occluded, 0 outside the image
    confidence: the detector's per-joint confidence in [0, 1]; null = none (written only
    for frames that have one; files without it read as no confidence)

    HANDS = {"left": 21x[x, y, z] | null, "right": ...}  (camera frame, metres, mano order)

Only frames that hold data are written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.annotation import KEYPOINT_SETS, OUTSIDE, VISIBLE, FrameAnnotation, side_row, visibility_from_bools
from core.errors import InputError
from core.hand.joints import HAND_SIDES, NUM_JOINTS
from core.io.atomic import write_text_atomic
from core.io.keypoints import camera_from_json, camera_to_json, reading
from core.types import Camera, TwoHandKeypoints

PROJECT_FORMAT = "im2hands-studio-project"
PROJECT_VERSION = 2
PROJECT_SUFFIX = ".im2hands.json"


class ProjectFileError(InputError):
    """A project file that does not parse, is from a newer version, or has a bad layout."""


@dataclass
class ProjectData:
    media_kind: str | None = None
    media_path: Path | None = None
    camera: Camera | None = None
    frames: dict[int, FrameAnnotation] = field(default_factory=dict)
    current_frame: int = 0
    settings: dict = field(default_factory=dict)
    weights_path: str | None = None


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON so that ``path`` holds either the old or the complete new content."""
    write_text_atomic(path, json.dumps(obj, indent=1))


# --- encoding -----------------------------------------------------------------------------
def _hands_to_json(k: TwoHandKeypoints | None):
    if k is None:
        return None
    return {s: None if k.hand(s) is None else np.asarray(k.hand(s)).round(7).tolist() for s in HAND_SIDES}


def _hands_from_json(obj, where: str) -> TwoHandKeypoints | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ProjectFileError(f"{where}: expected an object with 'left'/'right'")
    hands = {}
    for s in HAND_SIDES:
        value = obj.get(s)
        if value is None:
            hands[s] = None
            continue
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != (NUM_JOINTS, 3) or not np.isfinite(arr).all():
            raise ProjectFileError(
                f"{where}.{s}: expected {NUM_JOINTS}x3 finite numbers, got shape {arr.shape}"
            )
        hands[s] = arr
    return TwoHandKeypoints(left=hands["left"], right=hands["right"])


def camera_from_project_json(obj) -> Camera | None:
    return camera_from_json(obj, "camera", ProjectFileError)


def _relative_or_absolute(path: Path, base_dir: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base_dir.resolve())
    except ValueError:  # another drive on Windows
        return str(path.resolve())


def project_to_json(data: ProjectData, base_dir: Path) -> dict:
    frames = []
    for index in sorted(data.frames):
        ann = data.frames[index]
        if ann.is_empty():
            continue
        entry = {"index": int(index)}
        for name in KEYPOINT_SETS:
            entry[name] = _hands_to_json(getattr(ann, name))
        entry["visibility"] = {s: ann.visibility[side_row(s)].tolist() for s in HAND_SIDES}
        entry.update(interpolated=ann.interpolated, reviewed=ann.reviewed, no_hands=ann.no_hands)
        if ann.confidence is not None:
            entry["confidence"] = {
                s: [None if np.isnan(c) else round(float(c), 4) for c in ann.confidence[side_row(s)]]
                for s in HAND_SIDES
            }
        frames.append(entry)
    media = None
    if data.media_path is not None:
        media = {"kind": data.media_kind, "path": _relative_or_absolute(Path(data.media_path), base_dir)}
    return {
        "format": PROJECT_FORMAT,
        "version": PROJECT_VERSION,
        "media": media,
        "camera": camera_to_json(data.camera),
        "current_frame": int(data.current_frame),
        "settings": dict(data.settings),
        "weights": data.weights_path,
        "frames": frames,
    }


_MEDIA_KINDS = ("image", "folder", "video")


def _check_top_level_types(obj: dict) -> None:
    """The project schema's field types, checked before any field is used."""
    media = obj.get("media")
    if media is not None and (
        not isinstance(media, dict)
        or media.get("kind") not in _MEDIA_KINDS
        or not isinstance(media.get("path"), str)
    ):
        raise ProjectFileError(f"'media' must be null or {{'kind': one of {_MEDIA_KINDS}, 'path': a string}}")
    frame = obj.get("current_frame", 0)
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
        raise ProjectFileError(f"'current_frame' must be a whole number >= 0, got {frame!r}")
    if not isinstance(obj.get("settings") or {}, dict):
        raise ProjectFileError("'settings' must be an object")
    if obj.get("weights") is not None and not isinstance(obj.get("weights"), str):
        raise ProjectFileError("'weights' must be a path string or null")
    frames = obj.get("frames") or []
    if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
        raise ProjectFileError("'frames' must be a list of objects")


def project_from_json(obj, base_dir: Path) -> ProjectData:
    if not isinstance(obj, dict) or obj.get("format") != PROJECT_FORMAT:
        raise ProjectFileError("not an Im2Hands Studio project (missing 'format': 'im2hands-studio-project')")
    version = obj.get("version")
    if not isinstance(version, int) or version < 1:
        raise ProjectFileError(f"project version {version!r} is not valid")
    if version > PROJECT_VERSION:
        raise ProjectFileError(
            f"project version {version} is newer than this application understands ({PROJECT_VERSION}); "
            "update Im2Hands Studio"
        )
    _check_top_level_types(obj)
    data = ProjectData()
    media = obj.get("media")
    if media is not None:
        data.media_kind = media.get("kind")
        path = Path(media.get("path", ""))
        data.media_path = path if path.is_absolute() else (base_dir / path)
    data.camera = camera_from_project_json(obj.get("camera"))
    data.current_frame = int(obj.get("current_frame", 0))
    data.settings = dict(obj.get("settings") or {})
    data.weights_path = obj.get("weights")
    for n, entry in enumerate(obj.get("frames") or []):
        where = f"frames[{n}]"
        try:
            index = int(entry["index"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProjectFileError(f"{where}: missing frame index") from exc
        ann = FrameAnnotation()
        for name in KEYPOINT_SETS:
            setattr(ann, name, _hands_from_json(entry.get(name), f"{where}.{name}"))
        _read_visibility(entry, ann, where)
        ann.confidence = _read_confidence(entry.get("confidence"), f"{where}.confidence")
        for flag in ("interpolated", "reviewed", "no_hands"):
            setattr(ann, flag, bool(entry.get(flag, False)))
        data.frames[index] = ann
    return data


def _read_visibility(entry: dict, ann: FrameAnnotation, where: str) -> None:
    codes, legacy = entry.get("visibility") or {}, entry.get("visible") or {}
    for s in HAND_SIDES:
        if s in codes:
            row = np.asarray(codes[s])
            if row.shape != (NUM_JOINTS,) or not np.isin(row, (OUTSIDE, 1, VISIBLE)).all():
                raise ProjectFileError(f"{where}.visibility.{s}: expected {NUM_JOINTS} codes 0, 1 or 2")
            ann.visibility[side_row(s)] = row.astype(np.int8)
        elif s in legacy:
            row = np.asarray(legacy[s], dtype=bool)
            if row.shape != (NUM_JOINTS,):
                raise ProjectFileError(f"{where}.visible.{s}: expected {NUM_JOINTS} booleans")
            ann.visibility[side_row(s)] = visibility_from_bools(row)


def _read_confidence(obj, where: str) -> np.ndarray | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ProjectFileError(f"{where}: expected an object with 'left'/'right'")
    rows = np.full((len(HAND_SIDES), NUM_JOINTS), np.nan)
    for s in HAND_SIDES:
        values = obj.get(s)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != NUM_JOINTS:
            raise ProjectFileError(f"{where}.{s}: expected {NUM_JOINTS} numbers in [0, 1] or null")
        row = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        if np.any((row < 0) | (row > 1)):
            raise ProjectFileError(f"{where}.{s}: confidences must lie in [0, 1]")
        rows[side_row(s)] = row
    return rows


def save_project_file(path: str | Path, data: ProjectData) -> None:
    path = Path(path)
    write_json_atomic(path, project_to_json(data, path.parent))


def load_project_file(path: str | Path) -> ProjectData:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ProjectFileError(f"project file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProjectFileError(f"{path.name} is not valid JSON: {exc}") from exc
    with reading(path, ProjectFileError):  # any other malformed field: our error, naming the file
        try:
            return project_from_json(obj, path.parent)
        except ProjectFileError as exc:
            raise ProjectFileError(f"{path.name}: {exc}") from None


def is_project_path(path: str | Path) -> bool:
    return str(path).lower().endswith(PROJECT_SUFFIX)
