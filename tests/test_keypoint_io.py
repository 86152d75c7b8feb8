"""Keypoint files: our JSON, Im2Hands .ply pairs, the real InterHand2.6M annotation trio."""

import json

import numpy as np
import pytest

from core.errors import KeypointFileError
from core.hand.joints import convert_joints
from core.io.keypoints import (
    FORMAT_NAME,
    KeypointFrame,
    load_keypoints,
    load_keypoints_json,
    load_keypoints_ply_pair,
    save_keypoints_json,
    save_keypoints_ply_pair,
)
from core.types import Camera, TwoHandKeypoints
from tests import golden

IH = golden.realdata_dir() / "interhand26m_samples"


def _hands(seed=0):
    rng = np.random.default_rng(seed)
    return TwoHandKeypoints(
        left=rng.normal(0, 0.05, (21, 3)) + [0, 0, 0.6], right=rng.normal(0, 0.05, (21, 3)) + [0.1, 0, 0.6]
    )


def test_json_round_trip_with_camera_visibility_and_missing_hand(tmp_path):
    cam = Camera(K=np.array([[500.0, 0, 160], [0, 510.0, 120], [0, 0, 1]]), width=320, height=240)
    frames = [
        KeypointFrame(_hands(0), image="a.png", visibility={"left": np.arange(21) % 2 == 0}),
        KeypointFrame(TwoHandKeypoints(left=None, right=_hands(1).right), image=None),
    ]
    path = save_keypoints_json(tmp_path / "kp.json", frames, cam)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT_NAME and doc["version"] == 1 and doc["units"] == "m"
    loaded = load_keypoints_json(path)
    np.testing.assert_array_equal(loaded.camera.K, cam.K)
    assert (loaded.camera.width, loaded.camera.height) == (320, 240)
    np.testing.assert_array_equal(loaded.frames[0].keypoints.left, frames[0].keypoints.left)
    np.testing.assert_array_equal(loaded.frames[0].visibility["left"], np.arange(21) % 2 == 0)
    assert loaded.frames[1].keypoints.left is None and loaded.image_path(0) == tmp_path / "a.png"
    kp, cam2 = load_keypoints(path, "/elsewhere/a.png")  # picked by the image's file name
    np.testing.assert_array_equal(kp.right, frames[0].keypoints.right)


def test_json_in_millimetres_and_another_joint_order_is_converted(tmp_path):
    hands = _hands(2)
    doc = {
        "format": FORMAT_NAME,
        "version": 1,
        "units": "mm",
        "frame": "camera",
        "joint_order": "halo",
        "camera": None,
        "frames": [
            {
                "image": None,
                "left": None,
                "right": (convert_joints(hands.right, "mano", "halo") * 1000).tolist(),
            }
        ],
    }
    (tmp_path / "k.json").write_text(json.dumps(doc))
    kp, cam = load_keypoints(tmp_path / "k.json")
    assert cam is None and kp.left is None
    np.testing.assert_allclose(kp.right, hands.right, atol=1e-12)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"format": "something-else"}', "wrong 'format'"),
        ('{"format": "im2hands-studio/keypoints", "version": 7, "frames": []}', "unsupported version"),
        (
            '{"format": "im2hands-studio/keypoints", "version": 1, "frames": [{"left": [[0, 0, 1]]}]}',
            "21 joints",
        ),
        (
            '{"format": "im2hands-studio/keypoints", "version": 1, "frames": [{"left": [[0, 0, "x"]]}]}',
            "numbers",
        ),
        (
            '{"format": "im2hands-studio/keypoints", "version": 1, "units": "inch", "frames": []}',
            "unknown units",
        ),
        ('{"format": "im2hands-studio/keypoints", "version": 1, "camera": {"K": 1}, "frames": []}', "camera"),
        ("[1, 2, 3]", "neither"),
    ],
)
def test_unparsable_keypoint_files_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(KeypointFileError, match=message):
        load_keypoints(path)
    assert issubclass(KeypointFileError, ValueError)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(KeypointFileError, match="not found"):
        load_keypoints(tmp_path / "none.json")
    with pytest.raises(KeypointFileError, match="no keypoint file"):
        load_keypoints(tmp_path / "none_left.ply")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(KeypointFileError, match="unknown keypoint file type"):
        load_keypoints(tmp_path / "x.txt")


def test_ply_pair_round_trip_and_one_sided_pair(tmp_path):
    hands = _hands(3)
    written = save_keypoints_ply_pair(tmp_path / "0000001", hands)
    assert [p.name for p in written] == ["0000001_left.ply", "0000001_right.ply"]
    for given in ("0000001_left.ply", "0000001_right.ply"):
        kp, cam = load_keypoints(tmp_path / given)
        assert cam is None
        np.testing.assert_allclose(kp.left, hands.left, atol=1e-8)
        np.testing.assert_allclose(kp.right, hands.right, atol=1e-8)
    (tmp_path / "0000001_left.ply").unlink()
    kp = load_keypoints_ply_pair(tmp_path / "0000001_right.ply")
    assert kp.left is None and kp.right is not None
    (tmp_path / "0000002_left.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\n"
        "property float y\nproperty float z\nend_header\n0 0 0\n1 1 1\n"
    )
    with pytest.raises(KeypointFileError, match="expected 21 points"):
        load_keypoints(tmp_path / "0000002_left.ply")


def _require_interhand():
    if not (IH / "test_interhand2.6m_data.json").is_file():
        pytest.skip("InterHand2.6M samples not present")


def test_interhand_trio_two_hands_project_onto_the_image():
    _require_interhand()
    kp, cam = load_keypoints(IH / "test_interhand2.6m_data.json", IH / "image69148.jpg")
    assert kp.present_sides() == ("left", "right")
    assert (cam.width, cam.height) == (334, 512)
    for side in ("left", "right"):
        joints = kp.hand(side)
        assert np.all((joints[:, 2] > 0.8) & (joints[:, 2] < 1.5))  # metres from the camera
        uv = cam.project(joints)
        assert np.all((uv >= 0) & (uv < [cam.width, cam.height]))
        # Reordered to mano: wrist -> index MCP is a real bone length (~86 mm in the notes).
        assert 0.07 < np.linalg.norm(joints[5] - joints[0]) < 0.10
        assert 0.015 < np.linalg.norm(joints[8] - joints[7]) < 0.035  # index tip -> DIP
    # Same world point through our camera maths as through the raw JSON.
    raw = json.loads((IH / "test_interhand2.6m_joint_3d.json").read_text())["3"]["69148"]["world_coord"]
    camj = json.loads((IH / "test_interhand2.6m_camera.json").read_text())["3"]
    R, pos = np.array(camj["camrot"]["400026"]), np.array(camj["campos"]["400026"])
    np.testing.assert_allclose(kp.right[0], R @ (np.array(raw[20]) - pos) / 1000.0, atol=1e-12)


def test_interhand_one_hand_frames_and_lookup_errors():
    _require_interhand()
    kp, cam = load_keypoints(IH, IH / "image29590.jpg")
    assert kp.present_sides() == ("left",)
    kp, cam = load_keypoints(IH / "test_interhand2.6m_camera.json", "image2017.jpg")
    assert kp.present_sides() == ("right",) and (cam.width, cam.height) == (512, 334)
    with pytest.raises(KeypointFileError, match="not in the annotations"):
        load_keypoints(IH, "image00000.jpg")
    with pytest.raises(KeypointFileError, match="give the image"):
        load_keypoints(IH)


def test_interhand_keypoints_round_trip_through_our_json(tmp_path):
    _require_interhand()
    kp, cam = load_keypoints(IH, IH / "image69148.jpg")
    save_keypoints_json(tmp_path / "ih.json", [KeypointFrame(kp, image=str(IH / "image69148.jpg"))], cam)
    kp2, cam2 = load_keypoints(tmp_path / "ih.json", "image69148.jpg")
    np.testing.assert_array_equal(kp2.left, kp.left)
    np.testing.assert_array_equal(cam2.K, cam.K)


def test_atomic_write_gives_normal_permissions_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    import os

    from core.io.atomic import write_text_atomic

    path = tmp_path / "out.json"
    old_umask = os.umask(0o022)
    try:
        write_text_atomic(path, "first")
    finally:
        os.umask(old_umask)
    assert path.read_text() == "first"
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "second")
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left
