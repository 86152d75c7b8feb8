"""The document model: opened media, per-frame keypoints, the camera, undo, save/load.

No widgets here. Every user edit goes through :attr:`Document.undo_stack` (a ``QUndoStack``)
as a command holding before/after snapshots of the frames it touches, so undo restores
exactly what was there. Views listen to the signals and never change the data directly.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QStandardPaths, QTimer, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from app.annotation import (
    REVIEWED,
    VISIBILITY_CYCLE,
    VISIBILITY_NAMES,
    VISIBLE,
    FrameAnnotation,
    confidence_after_edit,
    fit_template_in_box,
    frame_state,
    place_template_hand,
    side_row,
    swapped,
    visibility_from_bools,
    with_hand,
)
from app.media import FrameSource, MediaError, open_media
from app.project import (
    PROJECT_SUFFIX,
    ProjectData,
    ProjectFileError,
    load_project_file,
    save_project_file,
)
from core.geometry.pose_interpolation import interpolate_hand, rigid_transform_hand
from core.hand.joints import HAND_SIDES, NUM_JOINTS
from core.types import Camera, TwoHandKeypoints

AUTOSAVE_INTERVAL_MS = 30_000
_MERGEABLE_ID = 0x1A2B  # QUndoCommand.id() for commands that merge within one drag


class _SnapshotCommand(QUndoCommand):
    """Replace the annotations of some frames (and optionally the camera) by snapshots."""

    def __init__(self, doc: Document, text: str, before: dict, after: dict, camera=None, merge_key=None):
        super().__init__(text)
        self._doc = doc
        self._before = before  # frame index -> FrameAnnotation | None
        self._after = after
        self._camera = camera  # (before, after) or None when the camera is untouched
        self._merge_key = merge_key

    def id(self) -> int:  # noqa: A003 - Qt API name
        return _MERGEABLE_ID if self._merge_key is not None else -1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt API name
        if not isinstance(other, _SnapshotCommand) or other._merge_key != self._merge_key:
            return False
        if other._camera is not None or self._camera is not None:
            return False
        for index, ann in other._after.items():
            self._before.setdefault(index, other._before[index])
            self._after[index] = ann
        return True

    def redo(self) -> None:
        self._doc._apply_snapshot(self._after, self._camera is not None, self._camera and self._camera[1])
        self._show_frames()

    def undo(self) -> None:
        self._doc._apply_snapshot(self._before, self._camera is not None, self._camera and self._camera[0])
        self._show_frames()

    def _show_frames(self) -> None:
        """Undo shows what it undoes: an edit of another frame first brings that frame up."""
        frames = sorted(self._after)
        if frames and self._doc.current_frame not in frames:
            self._doc.set_current_frame(frames[0])


class Document(QObject):
    mediaChanged = Signal()
    currentFrameChanged = Signal(int)
    keypointsChanged = Signal(int)  # frame index whose keypoints / visibility changed
    cameraChanged = Signal()
    modifiedChanged = Signal(bool)
    projectPathChanged = Signal(object)  # Path | None
    autosaved = Signal(object)  # Path

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self.media: FrameSource | None = None
        self.camera: Camera | None = None  # shared by all frames; None -> default per frame
        self.frames: dict[int, FrameAnnotation] = {}
        self.current_frame = 0
        self.project_path: Path | None = None
        self.settings: dict = {}
        self.weights_path: str | None = None
        self._untracked_changes = False  # changes outside the undo stack (media, settings)
        self._generation = 0  # bumps on every change; autosave skips when nothing is new
        self._autosaved_generation = 0
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)
        self.undo_stack.indexChanged.connect(self._on_index_changed)
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(AUTOSAVE_INTERVAL_MS)
        self.autosave_timer.timeout.connect(self.autosave)
        self.autosave_timer.start()

    # --- state ------------------------------------------------------------------------
    def is_modified(self) -> bool:
        return self._untracked_changes or not self.undo_stack.isClean()

    def _on_clean_changed(self, _clean: bool) -> None:
        self.modifiedChanged.emit(self.is_modified())

    def _on_index_changed(self, _index: int) -> None:
        self._bump()

    def _bump(self) -> None:
        self._generation += 1

    def _set_untracked(self, value: bool) -> None:
        was = self.is_modified()
        self._untracked_changes = value
        self._bump()
        if was != self.is_modified():
            self.modifiedChanged.emit(self.is_modified())

    def frame_count(self) -> int:
        return 0 if self.media is None else len(self.media)

    def frame_image(self, index: int | None = None) -> np.ndarray | None:
        if self.media is None:
            return None
        return self.media.frame_rgb(self.current_frame if index is None else index)

    def camera_for_frame(self, index: int | None = None) -> Camera | None:
        """The document camera if it matches the frame size, else a default pinhole."""
        image = self.frame_image(index)
        if image is None:
            return self.camera
        height, width = image.shape[:2]
        if self.camera is not None and (self.camera.width, self.camera.height) == (width, height):
            return self.camera
        return Camera.default_for_image(width, height)

    def annotation(self, index: int | None = None) -> FrameAnnotation:
        """The frame's annotation (read-only by convention: edit through the methods below)."""
        index = self.current_frame if index is None else index
        return self.frames.get(index) or FrameAnnotation()

    def active_keypoints(self, index: int | None = None) -> TwoHandKeypoints | None:
        return self.annotation(index).active()

    # --- media and frames -------------------------------------------------------------
    def open_media(self, path: str | Path) -> None:
        """Open an image / folder / video as a new, unsaved document (raises MediaError)."""
        source = open_media(path)
        self._reset(source)
        self._set_untracked(True)

    def _reset(self, source: FrameSource | None) -> None:
        if self.media is not None:
            self.media.close()
        self.media = source
        self.frames = {}
        self.camera = None
        self.current_frame = 0
        self.undo_stack.clear()
        self._set_project_path(None)
        self.mediaChanged.emit()
        self.cameraChanged.emit()
        self.currentFrameChanged.emit(0)

    def set_current_frame(self, index: int) -> None:
        count = self.frame_count()
        if count == 0:
            return
        index = int(np.clip(index, 0, count - 1))
        if index != self.current_frame:
            self.current_frame = index
            self.currentFrameChanged.emit(index)

    def step_frame(self, delta: int) -> None:
        self.set_current_frame(self.current_frame + delta)

    def set_settings(self, settings: dict, weights_path: str | None) -> None:
        """Pipeline settings saved with the project (not undoable, not a user edit)."""
        self.settings = dict(settings)
        self.weights_path = weights_path

    # --- edits (all undoable) ---------------------------------------------------------
    def _apply_snapshot(self, frames: dict, set_camera: bool, camera: Camera | None) -> None:
        if set_camera:
            self.camera = camera
            self.cameraChanged.emit()
        for index, ann in frames.items():
            if ann is None:
                self.frames.pop(index, None)
            else:
                self.frames[index] = ann.copy()
            self.keypointsChanged.emit(index)

    def _push(self, text: str, after: dict, camera: Camera | None = None, merge_key=None) -> None:
        before = {i: (self.frames[i].copy() if i in self.frames else None) for i in after}
        camera_pair = None if camera is None else (self.camera, camera)
        self.undo_stack.push(_SnapshotCommand(self, text, before, after, camera_pair, merge_key))

    def set_detected_keypoints(
        self, keypoints_by_frame: dict[int, TwoHandKeypoints], camera: Camera | None = None,
        visibility_by_frame: dict[int, np.ndarray] | None = None, text: str = "Load keypoints",
        keep_user_work: bool = False, confidence_by_frame: dict[int, np.ndarray | None] | None = None,
    ) -> int:  # fmt: skip
        """Replace the detected set of frames (dropping their edits), optionally the camera,
        the (2, 21) joint visibility (codes, or booleans of older files) and the (2, 21)
        detector confidence (NaN: none; frames not in it: none). A frame whose
        keypoints hold no hand is marked "no hands". ``keep_user_work``: frames the user
        edited or reviewed are left alone. Returns the number of frames changed."""
        after = {}
        for index, kps in keypoints_by_frame.items():
            ann = self.annotation(index).copy()
            if keep_user_work and (ann.is_keyframe() or ann.reviewed):
                continue
            ann.detected = kps.copy()
            ann.edited = None
            ann.refined = None
            ann.interpolated = ann.reviewed = False
            ann.no_hands = not kps.present_sides()
            conf = (confidence_by_frame or {}).get(index)
            ann.confidence = None if conf is None else np.asarray(conf, np.float64).reshape(2, NUM_JOINTS)
            if visibility_by_frame and index in visibility_by_frame:
                rows = np.asarray(visibility_by_frame[index]).reshape(2, NUM_JOINTS)
                ann.visibility = visibility_from_bools(rows) if rows.dtype == bool else rows.astype(np.int8)
            after[index] = ann
        if after:
            self._push(text, after, camera=camera)
        return len(after)

    def set_active_hand(self, index: int, side: str, joints_cam_m: np.ndarray | None, text: str,
                        merge_key=None, touched_joints=None) -> None:  # fmt: skip
        """Replace one hand; the joints it moves (or only ``touched_joints``) lose their
        detector confidence."""
        ann = _user_edit(self.annotation(index))
        before = None if ann.active() is None else ann.active().hand(side)
        ann.edited = with_hand(ann.active(), side, joints_cam_m)
        ann.confidence = confidence_after_edit(ann.confidence, side, before, ann.edited.hand(side),
                                               touched_joints)  # fmt: skip
        self._push(text, {index: ann}, merge_key=merge_key)

    def transform_hand(self, index: int, side: str, rotation=None, scale: float = 1.0, translation=None,
                       pivot=None, text: str = "", merge_key=None) -> bool:  # fmt: skip
        """Move / rotate / scale a whole hand (about its wrist unless ``pivot`` is given)."""
        active = self.active_keypoints(index)
        hand = None if active is None else active.hand(side)
        if hand is None:
            return False
        moved = rigid_transform_hand(hand, rotation, scale, translation, pivot)
        if not np.isfinite(moved).all() or moved[:, 2].min() <= 1e-6:
            return False
        self.set_active_hand(index, side, moved, text or f"Transform {side} hand", merge_key=merge_key)
        return True

    def set_joint_depth(self, index: int, side: str, joint: int, depth_m: float, merge_key=None) -> bool:
        """Slide a joint along its camera ray to ``depth_m`` (its pixel stays put)."""
        active = self.active_keypoints(index)
        hand = None if active is None else active.hand(side)
        camera = self.camera_for_frame(index)
        if hand is None or camera is None or depth_m <= 1e-3:
            return False
        uv = camera.project(np.asarray(hand[joint], dtype=np.float64)[None])[0]
        point = camera.backproject(uv, np.array(float(depth_m)))
        return self.move_keypoint_3d(index, side, joint, point, merge_key=merge_key)

    def move_keypoint_3d(self, index: int, side: str, joint: int, point_cam_m, merge_key=None) -> bool:
        """Move one joint to a camera-frame position (metres). Returns False if impossible."""
        active = self.active_keypoints(index)
        hand = None if active is None else active.hand(side)
        point = np.asarray(point_cam_m, dtype=np.float64).reshape(3)
        if hand is None or not np.isfinite(point).all() or point[2] <= 1e-6:
            return False
        joints = np.array(hand, dtype=np.float64)
        joints[joint] = point
        name = f"Move {side} joint {joint}"
        self.set_active_hand(index, side, joints, name, merge_key=merge_key)
        return True

    def move_keypoint_2d(self, index: int, side: str, joint: int, uv_px, merge_key=None,
                         skeleton_fit: bool = False) -> bool:  # fmt: skip
        """Move one joint to pixel ``uv_px`` along its camera ray, keeping its depth; with
        ``skeleton_fit`` the whole hand is refitted instead (the joint lands on ``uv_px``, the
        bone lengths stay plausible, :func:`core.detect.edit_fit.hand_after_2d_drag`)."""
        active = self.active_keypoints(index)
        hand = None if active is None else active.hand(side)
        camera = self.camera_for_frame(index)
        if hand is None or camera is None:
            return False
        if skeleton_fit:
            from core.detect.edit_fit import hand_after_2d_drag

            fitted = hand_after_2d_drag(side, hand, camera, joint, uv_px).joints_m
            self.set_active_hand(index, side, fitted, f"Move {side} joint {joint} (skeleton fit)",
                                 merge_key=merge_key, touched_joints=[joint])  # fmt: skip
            return True
        depth_m = float(hand[joint][2])
        point = camera.backproject(np.asarray(uv_px, dtype=np.float64), np.array(depth_m))
        return self.move_keypoint_3d(index, side, joint, point, merge_key=merge_key)

    def set_joint_visible(self, index: int, side: str, joint: int, visible: bool) -> None:
        from app.annotation import OCCLUDED

        self.set_joint_visibility(index, side, joint, VISIBLE if visible else OCCLUDED)

    def set_joint_visibility(self, index: int, side: str, joint: int, code: int) -> None:
        """Visible (2), occluded (1) or outside the image (0); not a pose edit, so the
        frame keeps its keyframe / interpolated state (and the reconstruction its cache)."""
        ann = self.annotation(index).copy()
        ann.visibility[side_row(side), joint] = int(code)
        ann.reviewed = False
        self._push(f"Mark {side} joint {joint} {VISIBILITY_NAMES[int(code)]}", {index: ann})

    def cycle_joint_visibility(self, index: int, side: str, joint: int) -> int:
        """visible -> occluded -> outside -> visible; returns the new code."""
        current = int(self.annotation(index).visibility[side_row(side), joint])
        code = VISIBILITY_CYCLE[(VISIBILITY_CYCLE.index(current) + 1) % len(VISIBILITY_CYCLE)]
        self.set_joint_visibility(index, side, joint, code)
        return code

    def swap_hands(self, index: int | None = None) -> None:
        index = self.current_frame if index is None else index
        ann = _user_edit(self.annotation(index))
        if ann.active() is None:
            return
        ann.detected = swapped(ann.detected)
        ann.edited = swapped(ann.edited)
        ann.refined = swapped(ann.refined)
        ann.visibility = ann.visibility[::-1].copy()
        ann.confidence = None if ann.confidence is None else ann.confidence[::-1].copy()
        self._push("Swap left/right", {index: ann})

    def accept_refined(self, index: int | None = None) -> bool:
        """Make network K's refined keypoints the edited set (undoable)."""
        index = self.current_frame if index is None else index
        ann = _user_edit(self.annotation(index))
        if ann.refined is None:
            return False
        ann.edited = ann.refined.copy()
        self._push("Accept refined keypoints", {index: ann})
        return True

    def accept_refined_hand(self, side: str, index: int | None = None) -> bool:
        """Take the refiner's keypoints for one hand only (undoable)."""
        index = self.current_frame if index is None else index
        refined = self.annotation(index).refined
        joints = None if refined is None else refined.hand(side)
        if joints is None:
            return False
        self.set_active_hand(index, side, joints, f"Accept refined {side} hand")
        return True

    def add_missing_hand(self, side: str, index: int | None = None) -> bool:
        """Place a template hand for a hand the detector missed, ready to be edited."""
        index = self.current_frame if index is None else index
        camera = self.camera_for_frame(index)
        active = self.active_keypoints(index)
        if camera is None or (active is not None and active.hand(side) is not None):
            return False
        other = None if active is None else active.hand("left" if side == "right" else "right")
        self.set_active_hand(index, side, place_template_hand(side, camera, other), f"Add {side} hand")
        return True

    def add_hand_in_box(self, side: str, box_px, index: int | None = None,
                        skeleton_fit: bool = False) -> bool:  # fmt: skip
        """Place (or replace) a template hand fitted to a box the user dragged (raises
        ValueError for a box too small); with ``skeleton_fit`` a hand of the anthropometric
        prior's size and proportions (:func:`core.detect.edit_fit.hand_in_box`)."""
        index = self.current_frame if index is None else index
        camera = self.camera_for_frame(index)
        if camera is None:
            return False
        joints = fit_template_in_box(side, camera, box_px)  # checks the box's size
        if skeleton_fit:
            from core.detect.edit_fit import hand_in_box

            joints = hand_in_box(side, camera, box_px).joints_m
        self.set_active_hand(index, side, joints, f"Add {side} hand")
        return True

    def remove_hand(self, side: str, index: int | None = None) -> None:
        index = self.current_frame if index is None else index
        self.set_active_hand(index, side, None, f"Remove {side} hand")

    # --- review and propagation (undoable) ---------------------------------------------------
    def frame_states(self) -> list[str]:
        """The state of every frame (see :func:`app.annotation.frame_state`)."""
        return [frame_state(self.frames.get(i)) for i in range(self.frame_count())]

    def review_counts(self) -> tuple[int, int]:
        """(frames reviewed, frames in the media)."""
        return sum(1 for a in self.frames.values() if a.reviewed), self.frame_count()

    def set_reviewed(self, reviewed: bool = True, frames=None) -> int:
        """Mark frames (default: the current one) reviewed or not; returns how many changed."""
        frames = [self.current_frame] if frames is None else list(frames)
        after = {}
        for index in frames:
            ann = self.annotation(index).copy()
            if ann.reviewed != reviewed and 0 <= index < self.frame_count():
                ann.reviewed = reviewed
                after[index] = ann
        if after:
            what = f"frame {frames[0]}" if len(after) == 1 else f"{len(after)} frames"
            self._push(f"Mark {what} {'reviewed' if reviewed else 'not reviewed'}", after)
        return len(after)

    def next_needing_review(self, start: int | None = None) -> int | None:
        """The first frame after ``start`` (wrapping around) that is not reviewed."""
        count = self.frame_count()
        start = self.current_frame if start is None else start
        for step in range(1, count + 1):
            index = (start + step) % count
            if frame_state(self.frames.get(index)) != REVIEWED:
                return index
        return None

    def copy_to_next_frame(self, index: int | None = None) -> bool:
        """The frame's pose and visibility become the next frame's (an edit there); moves on."""
        index = self.current_frame if index is None else index
        source = self.annotation(index)
        if source.active() is None or index + 1 >= self.frame_count():
            return False
        ann = _user_edit(self.annotation(index + 1))
        ann.edited = source.active().copy()
        ann.visibility = source.visibility.copy()
        ann.confidence = None if source.confidence is None else source.confidence.copy()
        self._push(f"Copy frame {index} to {index + 1}", {index + 1: ann})
        self.set_current_frame(index + 1)
        return True

    def keyframes(self) -> list[int]:
        return sorted(i for i, a in self.frames.items() if a.is_keyframe())

    def interpolate_keyframes(self) -> int:
        """Fill the frames between consecutive keyframes with interpolated poses (hands that
        both keyframes have; reviewed frames are left alone). Returns the frames filled."""
        keys = self.keyframes()
        after = {}
        for start, end in zip(keys, keys[1:], strict=False):
            a, b = self.frames[start].edited, self.frames[end].edited
            sides = [s for s in HAND_SIDES if a.hand(s) is not None and b.hand(s) is not None]
            if not sides:
                continue
            for index in range(start + 1, end):
                ann = self.annotation(index).copy()
                if ann.reviewed or ann.is_keyframe():
                    continue
                t = (index - start) / (end - start)
                hands = {s: interpolate_hand(a.hand(s), b.hand(s), t) if s in sides else None
                         for s in HAND_SIDES}  # fmt: skip
                ann.edited = TwoHandKeypoints(**hands)
                ann.visibility = self.frames[start if t < 0.5 else end].visibility.copy()
                ann.interpolated, ann.no_hands = True, False
                after[index] = ann
        if after:
            self._push(f"Interpolate {len(after)} frames", after)
        return len(after)

    # --- derived data (not undoable, not a user edit) ------------------------------------
    def set_refined(self, index: int, keypoints: TwoHandKeypoints | None) -> None:
        ann = self.annotation(index).copy()
        ann.refined = None if keypoints is None else keypoints.copy()
        self.frames[index] = ann

    # --- project files ------------------------------------------------------------------
    def _set_project_path(self, path: Path | None) -> None:
        self.project_path = None if path is None else Path(path)
        self.projectPathChanged.emit(self.project_path)

    def to_project_data(self) -> ProjectData:
        return ProjectData(
            media_kind=None if self.media is None else self.media.kind,
            media_path=None if self.media is None else self.media.path,
            camera=self.camera,
            frames={i: a.copy() for i, a in self.frames.items()},
            current_frame=self.current_frame,
            settings=dict(self.settings),
            weights_path=self.weights_path,
        )

    def save_project(self, path: str | Path | None = None) -> Path:
        path = Path(path) if path is not None else self.project_path
        if path is None:
            raise ProjectFileError("choose a file name to save the project")
        if not str(path).lower().endswith(PROJECT_SUFFIX):
            path = path.with_name(path.name + PROJECT_SUFFIX)
        old_autosave = self.autosave_path()
        save_project_file(path, self.to_project_data())
        self._set_project_path(path)
        self.undo_stack.setClean()
        self._set_untracked(False)
        for stale in {old_autosave, self.autosave_path()}:
            if stale is not None:
                stale.unlink(missing_ok=True)
        return path

    def load_project(self, path: str | Path) -> None:
        """Open a project file; it becomes this document's file."""
        self._load(Path(path), project_path=Path(path), modified=False)

    def _load(self, path: Path, project_path: Path | None, modified: bool) -> None:
        data = load_project_file(path)
        source = None
        if data.media_path is not None:
            try:
                source = open_media(data.media_path)
            except MediaError as exc:
                raise ProjectFileError(f"{path.name}: its media cannot be opened: {exc}") from exc
        self._reset(source)
        self.camera = data.camera
        self.frames = data.frames
        self.settings = data.settings
        self.weights_path = data.weights_path
        self._set_project_path(project_path)
        self._set_untracked(modified)
        self.cameraChanged.emit()
        for index in list(self.frames):
            self.keypointsChanged.emit(index)
        self.current_frame = -1
        self.set_current_frame(data.current_frame)
        if self.current_frame == -1:
            self.current_frame = 0
            self.currentFrameChanged.emit(0)

    # --- autosave -----------------------------------------------------------------------
    @staticmethod
    def autosave_dir() -> Path:
        env = os.environ.get("IM2HANDS_AUTOSAVE_DIR")
        if env:
            return Path(env)
        base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
        return Path(base or Path.home() / ".im2hands-studio") / "autosave"

    def autosave_path(self) -> Path | None:
        """A sidecar next to the project file, or a per-media file in the autosave folder
        (media folders may be read-only or third-party: never write beside them)."""
        if self.project_path is not None:
            return self.project_path.with_name(self.project_path.name + ".autosave")
        if self.media is None:
            return None
        digest = hashlib.sha1(str(self.media.path.resolve()).encode()).hexdigest()[:16]
        return self.autosave_dir() / f"{self.media.path.stem}-{digest}{PROJECT_SUFFIX}"

    def autosave(self) -> Path | None:
        """Write the sidecar when there are changes it does not hold yet."""
        path = self.autosave_path()
        if path is None or not self.is_modified() or self._autosaved_generation == self._generation:
            return None
        save_project_file(path, self.to_project_data())
        self._autosaved_generation = self._generation
        self.autosaved.emit(path)
        return path

    def find_recovery(self) -> Path | None:
        """An autosave newer than the saved project (or of unsaved work on this media)."""
        path = self.autosave_path()
        if path is None or not path.is_file():
            return None
        if self.project_path is not None and self.project_path.is_file():
            if path.stat().st_mtime <= self.project_path.stat().st_mtime:
                return None
        return path

    def recover(self) -> bool:
        path = self.find_recovery()
        if path is None:
            return False
        # The restored work belongs to the same project (or none) and is not saved yet.
        self._load(path, project_path=self.project_path, modified=True)
        return True

    def discard_autosave(self) -> None:
        path = self.autosave_path()
        if path is not None:
            path.unlink(missing_ok=True)


def _user_edit(ann: FrameAnnotation) -> FrameAnnotation:
    """A copy about to take a user's pose edit: it becomes a keyframe, to be reviewed again."""
    out = ann.copy()
    if out.interpolated:  # the interpolated pose becomes the user's own
        out.interpolated = False
    out.reviewed = False
    out.no_hands = False
    return out
