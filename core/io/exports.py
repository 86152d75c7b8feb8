"""Standard exports of annotated frames: COCO keypoints, the InterHand2.6M annotation trio,
and our own keypoint JSON. Pure data in, files out (atomic writes, no Qt).

* **COCO keypoints** (``person_keypoints``-style): one image per frame, one annotation per
  hand with 21 x (u, v, flag) in the ``mano`` order, flags from the visibility codes
  (2 visible, 1 occluded, 0 outside the image: u = v = 0 as COCO asks), the box around the
  labelled joints and a category per side (1 left hand, 2 right hand).
* **InterHand2.6M**: ``<prefix>_data.json`` (images + per-hand-pair annotations),
  ``<prefix>_camera.json`` (one capture ``"0"``, one camera ``"0"``: our intrinsics, identity
  rotation, position at the origin, so world millimetres are our camera frame in mm) and
  ``<prefix>_joint_3d.json`` (42 joints: right hand then left, InterHand's tip-first order).
  :func:`core.io.keypoints.load_interhand_keypoints` reads it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.hand.joints import (
    HAND_SIDES,
    INTERHAND_HAND_SLICES,
    MANO_JOINT_NAMES,
    MANO_PARENTS,
    NUM_JOINTS,
    convert_joints,
)
from core.io.atomic import write_text_atomic
from core.io.keypoints import KeypointFrame, save_keypoints_json
from core.types import Camera, TwoHandKeypoints

EXPORT_FORMATS = ("json", "coco", "interhand")
COCO_CATEGORIES = {"left": 1, "right": 2}


class ExportError(InputError):
    """Nothing to export, or inconsistent frames."""


@dataclass
class ExportFrame:
    """One annotated frame: ``image`` is the file name the export refers to."""

    index: int
    image: str
    keypoints: TwoHandKeypoints  # camera frame, metres, mano order
    visibility: np.ndarray  # (2, 21) codes, rows left, right

    def __post_init__(self) -> None:
        codes = np.asarray(self.visibility)
        if codes.shape != (2, NUM_JOINTS) or not np.isin(codes, (0, 1, 2)).all():
            raise ExportError(f"frame {self.index}: visibility must be (2, 21) codes 0, 1 or 2")
        self.visibility = codes.astype(np.int8)


def _check(frames: list[ExportFrame], camera: Camera | None) -> Camera:
    if not frames:
        raise ExportError("there are no annotated frames to export")
    if camera is None:
        raise ExportError("the export needs the camera the keypoints were made with")
    return camera


# --- COCO -----------------------------------------------------------------------------------
def coco_hand_keypoints(joints_cam_m: np.ndarray, codes: np.ndarray, camera: Camera
                        ) -> tuple[list[float], list[float], int]:  # fmt: skip
    """(63 numbers u, v, flag; bbox [x, y, w, h]; labelled joint count) of one hand."""
    uv = camera.project(np.asarray(joints_cam_m, dtype=np.float64))
    flags = np.asarray(codes, dtype=int).copy()
    inside = (uv[:, 0] >= 0) & (uv[:, 1] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] < camera.height)
    flags[~inside] = 0  # a joint projecting outside the image cannot be labelled in it
    uv = np.where(flags[:, None] > 0, uv, 0.0)
    labelled = uv[flags > 0]
    if len(labelled):
        lo, hi = labelled.min(axis=0), labelled.max(axis=0)
        bbox = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
    else:
        bbox = [0.0, 0.0, 0.0, 0.0]
    values = np.column_stack([uv, flags]).ravel()
    return [round(float(v), 3) for v in values], [round(v, 3) for v in bbox], int((flags > 0).sum())


def coco_document(frames: list[ExportFrame], camera: Camera | None) -> dict:
    camera = _check(frames, camera)
    skeleton = [[MANO_PARENTS[c] + 1, c + 1] for c in range(1, NUM_JOINTS)]  # COCO is 1-based
    images, annotations = [], []
    for image_id, frame in enumerate(frames, start=1):
        images.append({"id": image_id, "file_name": frame.image, "width": int(camera.width),
                       "height": int(camera.height), "frame_index": int(frame.index)})  # fmt: skip
        for row, side in enumerate(HAND_SIDES):
            joints = frame.keypoints.hand(side)
            if joints is None:
                continue
            keypoints, bbox, count = coco_hand_keypoints(joints, frame.visibility[row], camera)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": COCO_CATEGORIES[side],
                "keypoints": keypoints, "num_keypoints": count, "bbox": bbox,
                "area": round(bbox[2] * bbox[3], 3), "iscrowd": 0,
            })  # fmt: skip
    categories = [{"id": cid, "name": f"{side}_hand", "supercategory": "hand",
                   "keypoints": list(MANO_JOINT_NAMES), "skeleton": skeleton}
                  for side, cid in COCO_CATEGORIES.items()]  # fmt: skip
    return {"info": {"description": "Im2Hands Studio hand keypoints", "version": "1.0"},
            "images": images, "annotations": annotations, "categories": categories}  # fmt: skip


def save_coco(path: str | Path, frames: list[ExportFrame], camera: Camera | None) -> Path:
    path = Path(path)
    write_text_atomic(path, json.dumps(coco_document(frames, camera)))
    return path


# --- InterHand2.6M ------------------------------------------------------------------------------
def _hand_type(keypoints: TwoHandKeypoints) -> str:
    present = keypoints.present_sides()
    return "interacting" if len(present) == 2 else (present[0] if present else "none")


def interhand_documents(frames: list[ExportFrame], camera: Camera | None) -> tuple[dict, dict, dict]:
    """(data, camera, joint_3d) JSON documents; world = our camera frame, millimetres."""
    camera = _check(frames, camera)
    K = np.asarray(camera.K, dtype=np.float64)
    cameras = {"0": {"campos": {"0": [0.0, 0.0, 0.0]}, "camrot": {"0": np.eye(3).tolist()},
                     "focal": {"0": [float(K[0, 0]), float(K[1, 1])]},
                     "princpt": {"0": [float(K[0, 2]), float(K[1, 2])]}}}  # fmt: skip
    images, annotations, joints3d = [], [], {}
    for image_id, frame in enumerate(frames, start=1):
        if str(frame.index) in joints3d:
            raise ExportError(f"frame {frame.index} appears twice")
        world_mm = np.zeros((2 * NUM_JOINTS, 3))
        valid = np.zeros(2 * NUM_JOINTS)
        for side in HAND_SIDES:
            joints = frame.keypoints.hand(side)
            if joints is not None:
                sl = INTERHAND_HAND_SLICES[side]
                joints_ih = np.asarray(convert_joints(np.asarray(joints, np.float64), "mano", "interhand"))
                world_mm[sl] = joints_ih * 1e3
                valid[sl] = 1.0
        hand_type = _hand_type(frame.keypoints)
        images.append({"id": image_id, "file_name": frame.image, "width": int(camera.width),
                       "height": int(camera.height), "capture": 0, "camera": "0",
                       "frame_idx": int(frame.index), "seq_name": "im2hands"})  # fmt: skip
        box = _union_box(frame, camera)
        annotations.append({"id": image_id, "image_id": image_id, "bbox": box, "joint_valid": valid.tolist(),
                            "hand_type": hand_type, "hand_type_valid": 1})  # fmt: skip
        joints3d[str(frame.index)] = {"world_coord": world_mm.tolist(), "joint_valid": valid.tolist(),
                                      "hand_type": hand_type, "hand_type_valid": 1}  # fmt: skip
    return {"images": images, "annotations": annotations}, cameras, {"0": joints3d}


def _union_box(frame: ExportFrame, camera: Camera) -> list[float]:
    boxes = []
    for row, side in enumerate(HAND_SIDES):
        joints = frame.keypoints.hand(side)
        if joints is not None:
            _, bbox, count = coco_hand_keypoints(joints, frame.visibility[row], camera)
            if count:
                boxes.append([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]])
    if not boxes:
        return [0.0, 0.0, 0.0, 0.0]
    b = np.asarray(boxes)
    lo, hi = b[:, :2].min(axis=0), b[:, 2:].max(axis=0)
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def save_interhand(folder: str | Path, frames: list[ExportFrame], camera: Camera | None,
                   prefix: str = "im2hands") -> list[Path]:  # fmt: skip
    folder = Path(folder)
    data, cameras, joints3d = interhand_documents(frames, camera)
    written = []
    for kind, doc in (("data", data), ("camera", cameras), ("joint_3d", joints3d)):
        written.append(write_text_atomic(folder / f"{prefix}_{kind}.json", json.dumps(doc)))
    return written


# --- our JSON -------------------------------------------------------------------------------------
def save_own_json(path: str | Path, frames: list[ExportFrame], camera: Camera | None) -> Path:
    camera = _check(frames, camera)
    entries = [KeypointFrame(f.keypoints, image=f.image, frame_index=f.index,
                             visibility={s: f.visibility[r] for r, s in enumerate(HAND_SIDES)})
               for f in frames]  # fmt: skip
    return save_keypoints_json(path, entries, camera)


def write_export(fmt: str, out: str | Path, frames: list[ExportFrame], camera: Camera | None) -> list[Path]:
    """Dispatch on ``fmt`` (one of :data:`EXPORT_FORMATS`); ``out`` is a file for json / coco
    and a folder for interhand."""
    if fmt == "json":
        return [save_own_json(out, frames, camera)]
    if fmt == "coco":
        return [save_coco(out, frames, camera)]
    if fmt == "interhand":
        return save_interhand(out, frames, camera)
    raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
