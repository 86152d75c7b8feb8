"""Keypoint files <-> the opened media's frames (no Qt), on top of :mod:`core.io.keypoints`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.annotation import FrameAnnotation, visibility_from_bools
from app.media import FrameSource
from core.errors import KeypointFileError
from core.hand.joints import HAND_SIDES, NUM_JOINTS
from core.io.keypoints import (
    FORMAT_NAME,
    KeypointFrame,
    load_keypoints,
    load_keypoints_json,
    save_keypoints_json,
)
from core.types import Camera, TwoHandKeypoints


@dataclass
class LoadedKeypoints:
    keypoints: dict[int, TwoHandKeypoints] = field(default_factory=dict)  # frame -> keypoints
    visibility: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (2, 21) int8 codes
    camera: Camera | None = None
    carried_dropped: int = 0  # hands a smoother had copied over (not detections): not loaded


def _is_our_json(path: Path) -> bool:
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open("rb") as f:
        return FORMAT_NAME.encode() in f.read(4096)


def load_for_media(path: str | Path, media: FrameSource, current_frame: int) -> LoadedKeypoints:
    """Keypoints from ``path`` for the frames of ``media``.

    Our multi-frame JSON maps frames by image file name (images, folders) or by frame index
    (videos: ``frame_index`` or the ``#frame=N`` tag, else the position); hands a smoother
    carried over are not detections and are left out (counted);
    other formats are looked up per image (InterHand2.6M) or apply to the current frame
    (.ply pairs)."""
    path = Path(path)
    result = LoadedKeypoints()
    if _is_our_json(path):
        kp_file = load_keypoints_json(path)
        result.camera = kp_file.camera
        if media.kind == "video":
            indexed = [(i if f.frame_index is None else f.frame_index, f)
                       for i, f in enumerate(kp_file.frames)]  # fmt: skip
            pairs = [(i, f) for i, f in indexed if i < len(media)]
        else:
            by_name = {media.frame_path(i).name: i for i in range(len(media))}
            pairs = [(by_name[Path(f.image).name], f) for f in kp_file.frames
                     if f.image is not None and Path(f.image).name in by_name]  # fmt: skip
            if not pairs and len(kp_file.frames) == 1:  # one unnamed frame: the current one
                pairs = [(current_frame, kp_file.frames[0])]
        for index, frame in pairs:
            keypoints = frame.keypoints
            if frame.carried:
                result.carried_dropped += len(frame.carried)
                keypoints = TwoHandKeypoints(**{s: None if s in frame.carried else keypoints.hand(s)
                                                for s in HAND_SIDES})  # fmt: skip
            _add(result, index, keypoints, frame.visibility)
    else:
        indices = range(len(media)) if media.kind == "folder" else [current_frame]
        first_error = None
        for index in indices:
            try:
                keypoints, camera = load_keypoints(path, image_path=media.frame_path(index))
            except KeypointFileError as exc:
                first_error = first_error or exc
                continue
            _add(result, index, keypoints, None)
            result.camera = result.camera or camera
        if not result.keypoints and first_error is not None:
            raise first_error
    if not result.keypoints:
        raise KeypointFileError(f"{path.name} holds no keypoints for the opened media ({media.path.name})")
    return result


def _add(result: LoadedKeypoints, index: int, keypoints: TwoHandKeypoints, visibility) -> None:
    if not keypoints.present_sides():
        return
    result.keypoints[index] = keypoints
    if visibility:
        rows = np.full((len(HAND_SIDES), NUM_JOINTS), 2, dtype=np.int8)
        for r, side in enumerate(HAND_SIDES):
            if side in visibility:
                values = np.asarray(visibility[side])
                rows[r] = visibility_from_bools(values) if values.dtype == bool else values
        result.visibility[index] = rows


def save_for_media(path: str | Path, frames: dict[int, FrameAnnotation], media: FrameSource,
                   camera: Camera | None) -> Path:  # fmt: skip
    """Write the active keypoints of every annotated frame in our JSON format, each with its
    frame index and visibility codes, and the camera (the default one of the frame size
    when none was set, so the file says which intrinsics the 3D keypoints assume)."""
    path = Path(path)
    entries = []
    if camera is None and len(media):
        height, width = media.frame_rgb(0).shape[:2]
        camera = Camera.default_for_image(width, height)
    indices = sorted(i for i, a in frames.items() if a.active() is not None)
    for index in indices:
        ann = frames.get(index) or FrameAnnotation()
        keypoints = ann.active() or TwoHandKeypoints(None, None)
        image = None
        image_path = media.frame_path(index)
        if image_path is not None:
            image = os.path.relpath(image_path.resolve(), path.resolve().parent)
        visibility = {s: ann.visibility[r] for r, s in enumerate(HAND_SIDES)}
        entries.append(KeypointFrame(keypoints, image=image, visibility=visibility, frame_index=index))
    if not entries:
        raise KeypointFileError("there are no keypoints to export yet")
    return save_keypoints_json(path, entries, camera)
