"""Document model, project files, keypoint-file mapping and the detect hook (no VTK, no display)."""

from __future__ import annotations

import gc
import json

import cv2
import numpy as np
import pytest
from golden import realdata_dir

from app.annotation import place_template_hand, template_hand
from app.detection import NoHandsFound, detect_hands, detect_keypoints
from app.document import Document
from app.keypoint_files import load_for_media, save_for_media
from app.media import MediaError, open_media
from app.project import PROJECT_VERSION, ProjectFileError, load_project_file, write_json_atomic
from app.worker import ReconstructionRequest, ReconstructionWorker
from core.errors import InputError
from core.hand.joints import MANO_PARENTS
from core.io.keypoints import KeypointFrame, save_keypoints_json
from core.types import Camera, TwoHandKeypoints


@pytest.fixture(autouse=True)
def _free_documents():
    """A dropped Document lives on in its reference cycles (signal connections), its 30 s
    autosave timer running, until the garbage collector runs; a late autosave would write
    outside tmp_path. Free them before the next test."""
    yield
    gc.collect()


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (2, 10, 1):  # natural sort: 1, 2, 10
        image = np.full((120, 160, 3), 40 * i % 255, dtype=np.uint8)
        cv2.imwrite(str(folder / f"f{i}.png"), image)
    return folder


def two_hands(camera: Camera) -> TwoHandKeypoints:
    right = place_template_hand("right", camera, None)
    return TwoHandKeypoints(left=place_template_hand("left", camera, right), right=right)


@pytest.fixture
def doc(qapp, image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("IM2HANDS_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    d = Document()
    d.open_media(image_folder)
    d.set_detected_keypoints({0: two_hands(d.camera_for_frame(0))})
    return d


def test_folder_frames_are_naturally_sorted_and_bad_paths_raise(image_folder, tmp_path):
    source = open_media(image_folder)
    assert [source.frame_name(i) for i in range(len(source))] == ["f1.png", "f2.png", "f10.png"]
    assert source.frame_rgb(2).shape == (120, 160, 3)
    assert source.frame_rgb(2)[0, 0, 0] == 400 % 255
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MediaError, match="unknown file type"):
        open_media(tmp_path / "notes.txt")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        open_media(tmp_path / "broken.png")


def test_template_hand_is_a_plausible_hand():
    joints = template_hand("right")
    bones_mm = [np.linalg.norm(joints[c] - joints[p]) * 1000 for c, p in enumerate(MANO_PARENTS) if p >= 0]
    assert 15 < min(bones_mm) and max(bones_mm) < 100
    np.testing.assert_allclose(template_hand("left")[:, 0], -joints[:, 0])


def test_2d_move_keeps_depth_and_lands_on_the_pixel_and_undo_restores(doc):
    camera = doc.camera_for_frame(0)
    before = doc.active_keypoints(0).right.copy()
    target_uv = camera.project(before[8]) + np.array([12.5, -7.0])
    assert doc.move_keypoint_2d(0, "right", 8, target_uv, merge_key=("2d", 1))
    after = doc.active_keypoints(0).right
    assert after[8][2] == pytest.approx(before[8][2], abs=1e-12)  # along the camera ray
    np.testing.assert_allclose(camera.project(after[8]), target_uv, atol=1e-9)
    np.testing.assert_array_equal(np.delete(after, 8, 0), np.delete(before, 8, 0))
    assert doc.annotation(0).detected.right[8] == pytest.approx(before[8])  # the detection is kept
    assert doc.is_modified()
    doc.undo_stack.undo()
    np.testing.assert_array_equal(doc.active_keypoints(0).right, before)
    doc.undo_stack.redo()
    np.testing.assert_allclose(camera.project(doc.active_keypoints(0).right[8]), target_uv, atol=1e-9)


def test_one_drag_is_one_undo_step(doc):
    start = doc.active_keypoints(0).left.copy()
    uv0 = doc.camera_for_frame(0).project(start[4])
    count = doc.undo_stack.count()
    for k in range(1, 6):
        doc.move_keypoint_2d(0, "left", 4, uv0 + k * 3.0, merge_key=("2d", 7))
    doc.move_keypoint_2d(0, "left", 4, uv0 + 40.0, merge_key=("2d", 8))  # next drag
    assert doc.undo_stack.count() == count + 2
    doc.undo_stack.undo()
    np.testing.assert_allclose(doc.camera_for_frame(0).project(doc.active_keypoints(0).left[4]), uv0 + 15.0)
    doc.undo_stack.undo()
    np.testing.assert_array_equal(doc.active_keypoints(0).left, start)


def test_swap_visibility_and_missing_hand(doc):
    original = doc.active_keypoints(0).copy()
    doc.set_joint_visible(0, "left", 3, False)
    doc.swap_hands(0)
    swapped = doc.active_keypoints(0)
    np.testing.assert_array_equal(swapped.left, original.right)
    assert not doc.annotation(0).visible[1, 3] and doc.annotation(0).visible[0].all()
    doc.remove_hand("left", 0)
    assert doc.active_keypoints(0).left is None
    assert doc.add_missing_hand("left", 0)
    added = doc.active_keypoints(0).left
    assert added.shape == (21, 3) and np.all(added[:, 2] > 0.3)
    assert not doc.add_missing_hand("left", 0)  # already there
    for _ in range(4):
        doc.undo_stack.undo()
    np.testing.assert_array_equal(doc.active_keypoints(0).left, original.left)


def test_project_round_trip_and_atomic_save(doc, tmp_path):
    doc.move_keypoint_3d(0, "right", 0, doc.active_keypoints(0).right[0] + [0.01, 0, 0.02])
    doc.set_joint_visible(0, "right", 20, False)
    doc.set_refined(0, doc.active_keypoints(0))
    doc.set_detected_keypoints({2: two_hands(doc.camera_for_frame(2))})
    doc.set_current_frame(2)
    doc.set_settings({"resolution": 96, "use_refinement": False}, "weights/x.safetensors")
    path = doc.save_project(tmp_path / "proj")
    assert path.name == "proj.im2hands.json" and not doc.is_modified()
    raw = json.loads(path.read_text())
    assert raw["version"] == PROJECT_VERSION and raw["media"]["path"] == "frames"
    assert [f["index"] for f in raw["frames"]] == [0, 2]

    other = Document()
    other.load_project(path)
    assert other.frame_count() == 3 and other.current_frame == 2 and not other.is_modified()
    for index in (0, 2):
        a, b = doc.annotation(index), other.annotation(index)
        for name in ("detected", "edited", "refined"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_allclose(y.left, x.left, atol=1e-7)
                np.testing.assert_allclose(y.right, x.right, atol=1e-7)
        np.testing.assert_array_equal(a.visible, b.visible)
    assert other.settings == {"resolution": 96, "use_refinement": False}
    assert other.weights_path == "weights/x.safetensors"

    # A failing write leaves the previous file intact.
    good = path.read_text()
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert path.read_text() == good
    assert not list(tmp_path.glob(".proj*tmp"))


def test_bad_or_newer_project_files_raise_input_errors(tmp_path):
    path = tmp_path / "x.im2hands.json"
    path.write_text("{not json")
    with pytest.raises(ProjectFileError, match="not valid JSON"):
        load_project_file(path)
    path.write_text(json.dumps({"format": "im2hands-studio-project", "version": PROJECT_VERSION + 1}))
    with pytest.raises(ProjectFileError, match="newer"):
        load_project_file(path)
    path.write_text(json.dumps({"format": "im2hands-studio-project", "version": 1,
                                "frames": [{"index": 0, "detected": {"left": [[0, 0]]}}]}))  # fmt: skip
    with pytest.raises(ProjectFileError, match="21x3"):
        load_project_file(path)
    path.write_text(json.dumps({"format": "im2hands-studio-project", "version": 2,
                                "frames": [{"index": 0, "confidence": {"left": [1.5] * 21}}]}))  # fmt: skip
    with pytest.raises(ProjectFileError, match=r"x.im2hands.json: frames\[0\].confidence.left"):
        load_project_file(path)


def test_edits_clear_the_confidence_of_the_joints_they_move(doc):
    confidence = np.full((2, 21), 0.3)
    doc.set_detected_keypoints({0: doc.active_keypoints(0)}, confidence_by_frame={0: confidence})
    assert doc.annotation(0).weak_joints().all()
    uv = doc.camera_for_frame(0).project(doc.active_keypoints(0).left[5])
    doc.move_keypoint_2d(0, "left", 5, uv + 7.0)
    weak = doc.annotation(0).weak_joints()
    assert not weak[0, 5] and weak.sum() == 41
    doc.transform_hand(0, "right", translation=np.array([0.01, 0.0, 0.0]))
    assert doc.annotation(0).weak_joints().sum() == 20  # every right joint moved
    doc.remove_hand("left")
    assert doc.annotation(0).confidence is None  # nothing left to flag


def test_autosave_writes_a_sidecar_and_recovery_restores_it(doc, tmp_path):
    doc.move_keypoint_3d(0, "left", 0, doc.active_keypoints(0).left[0] + [0, 0.01, 0])
    moved = doc.active_keypoints(0).left.copy()
    sidecar = doc.autosave()
    assert sidecar is not None and sidecar.parent == tmp_path / "autosave"
    assert doc.autosave() is None  # nothing new since
    fresh = Document()
    fresh.open_media(doc.media.path)
    assert fresh.find_recovery() == sidecar
    assert fresh.recover() and fresh.is_modified()
    np.testing.assert_allclose(fresh.active_keypoints(0).left, moved, atol=1e-7)
    # After a save the sidecar beside the project replaces the per-media one.
    project = fresh.save_project(tmp_path / "p.im2hands.json")
    assert not sidecar.exists()
    fresh.move_keypoint_3d(0, "left", 0, moved[0] + [0, 0.02, 0])
    assert fresh.autosave() == project.with_name(project.name + ".autosave")


def test_keypoint_files_map_to_folder_frames_by_name(doc, image_folder, tmp_path):
    camera = doc.camera_for_frame(0)
    kps = two_hands(camera)
    json_path = tmp_path / "kp.json"
    vis = {"left": np.arange(21) % 2 == 0, "right": np.ones(21, bool)}
    save_keypoints_json(json_path, [KeypointFrame(kps, image="frames/f10.png", visibility=vis)], camera)
    loaded = load_for_media(json_path, doc.media, current_frame=0)
    assert list(loaded.keypoints) == [2]  # f10.png is the third frame
    np.testing.assert_array_equal(loaded.visibility[2][0], np.where(vis["left"], 2, 1))  # booleans -> codes
    doc.set_detected_keypoints(loaded.keypoints, loaded.camera, loaded.visibility)
    out = save_for_media(tmp_path / "out.json", doc.frames, doc.media, doc.camera)
    again = load_for_media(out, doc.media, current_frame=1)
    assert sorted(again.keypoints) == [0, 2]
    np.testing.assert_allclose(again.keypoints[2].right, kps.right)


def test_detect_hook_lifts_a_real_photo_and_reports_an_empty_frame():
    from core.io.images import load_image_rgb

    path = realdata_dir() / "images/two_hands/hamer_test5.jpg"  # both hands in front of a face
    if not path.is_file():
        pytest.skip(f"{path} not present")
    image = load_image_rgb(path)
    camera = Camera.default_for_image(image.shape[1], image.shape[0])
    keypoints = detect_keypoints(image, camera)
    assert keypoints.present_sides() == ("left", "right")
    for side in ("left", "right"):
        joints = keypoints.hand(side)
        uv = camera.project(joints)
        assert np.all(joints[:, 2] > 0.1) and np.all((uv >= 0) & (uv < [camera.width, camera.height]))
    assert keypoints.right[0, 0] < keypoints.left[0, 0]  # her right hand is on the image's left
    confidence = detect_hands(image, camera).confidence  # the skeleton fit's, per joint
    assert confidence.shape == (2, 21) and np.all((confidence > 0) & (confidence <= 1))
    with pytest.raises(NoHandsFound, match="no hand found"):
        detect_keypoints(np.full((240, 320, 3), 128, np.uint8), Camera.default_for_image(320, 240))


def test_worker_reports_a_failed_engine_once_and_rebuilds_only_when_configured(qtbot):
    builds, failures = [], []

    def factory(weights, device):
        builds.append(weights)
        if weights is None:
            raise FileNotFoundError("no shipped weights in resources/weights")
        return object()

    worker = ReconstructionWorker(factory)
    worker.failed.connect(failures.append)
    with qtbot.waitSignal(worker.failed, timeout=5000):
        worker.start()
    camera = Camera.default_for_image(64, 48)
    request = ReconstructionRequest(0, np.zeros((48, 64, 3), np.uint8), camera, two_hands(camera), None)
    try:
        for _ in range(2):
            with qtbot.waitSignal(worker.requestDone, timeout=5000):
                worker.submit(request)
        assert builds == [None]  # not rebuilt for each request
        assert [f.kind for f in failures] == ["engine"] * 3
        assert "no shipped weights" in failures[0].message and "load a checkpoint" in failures[1].message
        with qtbot.waitSignal(worker.engineReady, timeout=5000):
            worker.configure_engine("other.safetensors", "cpu")
        assert builds == [None, "other.safetensors"]
    finally:
        worker.stop()
