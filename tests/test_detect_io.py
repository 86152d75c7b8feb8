"""Video reading, camera intrinsics sources and the ``detect`` command."""

import json

import numpy as np
import pytest
from golden import REPO_ROOT, realdata_dir

from core.detect.intrinsics import CameraFileError, camera_for_image, camera_from_file

VIDEO = "video/mediapipe_samples_hand_landmarker_test_video.mp4"


def _need(rel):
    path = realdata_dir() / rel
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def test_video_seek_step_and_every():
    from core.detect.video import VideoError, VideoReader

    with VideoReader(_need(VIDEO)) as video:
        assert (video.width, video.height) == (640, 360)
        assert video.fps == pytest.approx(25.0)
        assert 190 <= video.frame_count <= 210  # 8.1 s at 25 fps
        f10 = video.read(10)
        assert f10.shape == (360, 640, 3) and f10.dtype == np.uint8
        f11 = video.step()
        assert video.position == 12 and not np.array_equal(f10, f11)
        np.testing.assert_array_equal(video.read(10), f10)  # seeking back is frame-accurate
        picked = list(video.frames(every=7, max_frames=3, start=3))
        assert [i for i, _ in picked] == [3, 10, 17]
        np.testing.assert_array_equal(picked[1][1], f10)
        with pytest.raises(VideoError):
            video.read(video.frame_count + 5)


def test_missing_video_is_a_user_error(tmp_path):
    from core.detect.video import VideoError, VideoReader

    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"nothing here")
    with pytest.raises(VideoError):
        VideoReader(bad)


def test_interhand_camera_file_is_picked_by_image_name():
    cam_path = _need("interhand26m_samples/test_interhand2.6m_camera.json")
    cam, origin = camera_for_image(334, 512, cam_path, cam_path.parent / "image69148.jpg")
    assert origin == "file"
    raw = json.loads(cam_path.read_text())["3"]
    assert cam.K[0, 0] == pytest.approx(raw["focal"]["400026"][0])
    assert cam.K[1, 2] == pytest.approx(raw["princpt"]["400026"][1])
    with pytest.raises(CameraFileError):
        camera_from_file(cam_path, 334, 512)  # several captures and no image name


def test_own_camera_file_rescales_to_the_image(tmp_path):
    path = tmp_path / "cam.json"
    path.write_text(json.dumps({"K": [[500, 0, 320], [0, 500, 240], [0, 0, 1]], "width": 640, "height": 480}))
    cam = camera_from_file(path, 320, 240)
    np.testing.assert_allclose(cam.K, [[250, 0, 160], [0, 250, 120], [0, 0, 1]])
    path.write_text("{not json")
    with pytest.raises(CameraFileError):
        camera_from_file(path, 320, 240)


def test_exif_then_default_intrinsics(tmp_path):
    from PIL import Image

    from core.types import Camera

    path = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 28  # FocalLengthIn35mmFilm: a 28 mm-equivalent lens
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(path, exif=exif)
    cam, origin = camera_for_image(400, 300, image_path=path)
    assert origin == "exif"
    assert cam.K[0, 0] == pytest.approx(28 / np.hypot(36, 24) * 500)  # 500 px diagonal
    # a resized photo whose EXIF lacks the pixel size the focal-plane resolution refers to
    photo = _need("images/two_hands/hamer_test1.jpg")
    cam2, origin2 = camera_for_image(848, 565, image_path=photo)
    assert origin2 == "default"
    np.testing.assert_allclose(cam2.K, Camera.default_for_image(848, 565).K)


def test_detect_command_writes_keypoints_json(tmp_path):
    from core.io.keypoints import load_keypoints
    from main import main

    image = _need("images/single_hand/mediapipe_samples_hand_thumb_up.jpg")
    out = tmp_path / "kp.json"
    overlay = tmp_path / "overlay.png"
    assert main(["detect", str(image), "--out", str(out), "--overlay", str(overlay)]) == 0
    keypoints, camera = load_keypoints(out, image)
    assert len(keypoints.present_sides()) == 1
    joints = keypoints.hand(keypoints.present_sides()[0])
    uv = camera.project(joints)
    assert np.all((uv[:, 0] > 100) & (uv[:, 0] < 450) & (uv[:, 1] > 20) & (uv[:, 1] < 480))
    assert overlay.is_file()


def test_detect_command_on_video_frames(tmp_path):
    from core.io.keypoints import load_keypoints_json
    from main import main

    video = _need(VIDEO)
    out = tmp_path / "video.json"
    assert main(["detect", str(video), "--out", str(out), "--every", "50", "--max-frames", "3",
                 "--no-retries"]) == 0
    doc = load_keypoints_json(out)
    assert [f.image.rsplit("#frame=", 1)[1] for f in doc.frames] == ["0", "50", "100"]
    assert sum(len(f.keypoints.present_sides()) for f in doc.frames) >= 2


def test_detect_command_reports_missing_input(tmp_path, capsys):
    from main import main

    assert main(["detect", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "x.json")]) == 2
    assert "not found" in capsys.readouterr().err
    assert REPO_ROOT.is_dir()
