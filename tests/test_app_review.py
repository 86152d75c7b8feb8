"""Review states, keyframe interpolation, copy-forward, three-state visibility and frame-tagged
keypoint imports in the document model (no display needed)."""

from __future__ import annotations

import gc
import json

import cv2
import numpy as np
import pytest

from app.annotation import (
    DETECTED,
    EDITED,
    INTERPOLATED,
    NO_HANDS,
    NOT_ANNOTATED,
    OCCLUDED,
    OUTSIDE,
    REVIEWED,
    VISIBLE,
    place_template_hand,
)
from app.document import Document
from app.keypoint_files import load_for_media, save_for_media
from app.project import load_project_file
from core.detect.smoothing import TwoHandSmoother
from core.geometry.pose_interpolation import bone_lengths, rotation_about_axis
from core.io.keypoints import KeypointFrame, load_keypoints_json, save_keypoints_json
from core.types import Camera, TwoHandKeypoints


@pytest.fixture(autouse=True)
def _free_documents():
    yield
    gc.collect()


@pytest.fixture
def video_path(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for i in range(12):
        writer.write(np.full((120, 160, 3), 20 * i, np.uint8))
    writer.release()
    return path


@pytest.fixture
def doc(qapp, video_path, tmp_path, monkeypatch):
    monkeypatch.setenv("IM2HANDS_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    d = Document()
    d.open_media(video_path)
    return d


def hands(camera: Camera) -> TwoHandKeypoints:
    right = place_template_hand("right", camera, None)
    return TwoHandKeypoints(left=place_template_hand("left", camera, right), right=right)


def test_states_follow_detection_edits_interpolation_and_review(doc):
    cam = doc.camera_for_frame(0)
    assert doc.frame_states()[:3] == [NOT_ANNOTATED] * 3
    doc.set_detected_keypoints({1: hands(cam), 2: TwoHandKeypoints(None, None)})
    assert doc.frame_states()[:3] == [NOT_ANNOTATED, DETECTED, NO_HANDS]
    doc.move_keypoint_3d(1, "left", 8, doc.active_keypoints(1).left[8] + [0.0, 0.01, 0.0])
    assert doc.frame_states()[1] == EDITED and doc.keyframes() == [1]
    doc.set_current_frame(1)
    assert doc.set_reviewed() == 1 and doc.frame_states()[1] == REVIEWED
    assert doc.review_counts() == (1, 12)
    assert doc.next_needing_review(1) == 2 and doc.next_needing_review(11) == 0
    doc.move_keypoint_3d(1, "left", 8, doc.active_keypoints(1).left[8] + [0.0, 0.01, 0.0])
    assert doc.frame_states()[1] == EDITED  # an edit after review needs another look
    doc.copy_to_next_frame(1)
    assert doc.current_frame == 2 and doc.frame_states()[2] == EDITED


def test_interpolation_between_keyframes_keeps_bones_and_marks_frames(doc):
    cam = doc.camera_for_frame(0)
    a = hands(cam)
    turn = rotation_about_axis([0.0, 0.0, 1.0], 1.0)
    doc.set_detected_keypoints({0: a})
    doc.transform_hand(0, "right", translation=[0.0, 0.0, 0.0])  # frame 0 becomes a keyframe
    doc.set_detected_keypoints({8: a})
    assert doc.transform_hand(8, "right", rotation=turn, translation=[0.05, 0.0, 0.1])
    doc.remove_hand("left", 8)
    doc.set_detected_keypoints({4: a})  # a detection between keyframes is replaced
    doc.set_current_frame(6)
    doc.set_reviewed()  # ...but a reviewed frame is left alone
    assert doc.interpolate_keyframes() == 6
    states = doc.frame_states()
    assert states[:9] == [EDITED] + [INTERPOLATED] * 5 + [REVIEWED, INTERPOLATED, EDITED]
    reference = bone_lengths(a.right)
    for index in (1, 3, 5, 7):
        right = doc.active_keypoints(index).right
        assert np.abs(bone_lengths(right) - reference).max() < 1e-9
        assert doc.active_keypoints(index).left is None  # the left hand is in one keyframe only
    np.testing.assert_allclose(doc.active_keypoints(4).right[0], a.right[0] + [0.025, 0.0, 0.05])
    doc.move_keypoint_3d(3, "right", 4, doc.active_keypoints(3).right[4] + [0.0, 0.005, 0.0])
    assert doc.frame_states()[3] == EDITED and doc.keyframes() == [0, 3, 8]


def test_undo_of_an_edit_on_another_frame_jumps_there(doc):
    doc.set_detected_keypoints({5: hands(doc.camera_for_frame(5))})
    doc.set_current_frame(5)
    doc.move_keypoint_2d(5, "left", 3, [60.0, 50.0])
    doc.set_current_frame(0)
    doc.undo_stack.undo()
    assert doc.current_frame == 5
    doc.set_current_frame(2)
    doc.undo_stack.redo()
    assert doc.current_frame == 5


def test_visibility_cycles_through_three_states_and_is_saved(doc, tmp_path):
    doc.set_detected_keypoints({0: hands(doc.camera_for_frame(0))})
    assert [doc.cycle_joint_visibility(0, "right", 7) for _ in range(3)] == [OCCLUDED, OUTSIDE, VISIBLE]
    doc.cycle_joint_visibility(0, "right", 7)
    doc.cycle_joint_visibility(0, "left", 2)
    doc.cycle_joint_visibility(0, "left", 2)
    doc.set_reviewed(frames=[0, 3])
    path = doc.save_project(tmp_path / "p")
    data = load_project_file(path)
    assert data.frames[0].visibility[1, 7] == OCCLUDED and data.frames[0].visibility[0, 2] == OUTSIDE
    assert data.frames[0].reviewed and data.frames[3].reviewed and not data.frames[3].active()
    raw = json.loads(path.read_text())
    assert raw["version"] == 2 and raw["frames"][0]["visibility"]["right"][7] == 1


def test_sparse_detect_output_lands_on_its_own_frames(doc, tmp_path):
    """`detect --every 4` output: frames 0, 4, 8 (tagged), not 0, 1, 2; carried hands are not
    loaded as detections."""
    cam = doc.camera_for_frame(0)
    kp = hands(cam)
    frames = [KeypointFrame(kp, image=f"clip.avi#frame={i}") for i in (0, 4)]
    frames.append(KeypointFrame(kp, image="clip.avi#frame=8", frame_index=8, carried=("left",)))
    save_keypoints_json(tmp_path / "det.json", frames, cam)
    loaded = load_for_media(tmp_path / "det.json", doc.media, current_frame=0)
    assert sorted(loaded.keypoints) == [0, 4, 8] and loaded.carried_dropped == 1
    assert loaded.keypoints[8].left is None and loaded.keypoints[8].right is not None
    doc.set_detected_keypoints(loaded.keypoints, None, loaded.visibility)
    out = save_for_media(tmp_path / "out.json", doc.frames, doc.media, doc.camera)
    written = load_keypoints_json(out)
    assert [f.frame_index for f in written.frames] == [0, 4, 8]
    assert written.camera is not None and (written.camera.width, written.camera.height) == (160, 120)


def test_smoother_flags_and_drops_stale_hands_on_sparse_frames():
    hand = np.zeros((21, 3)) + [0.0, 0.0, 0.5]
    smoother = TwoHandSmoother()
    smoother(TwoHandKeypoints(left=hand, right=hand + 0.2), 0.0)
    out = smoother(TwoHandKeypoints(left=None, right=hand + 0.2), 1 / 30)  # 1 frame later
    assert out.left is not None and smoother.carried["left"]
    out = smoother(TwoHandKeypoints(left=None, right=hand + 0.2), 40 / 30)  # every 40th frame
    assert out.left is None and not smoother.carried["left"]
