"""COCO keypoints, the InterHand2.6M trio and our JSON from annotated frames; the export command."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import pytest

import core.engine  # noqa: F401  (torch/triton load before any GL context of GUI tests: see app.cli)
from app.annotation import place_template_hand
from core.io.exports import ExportError, ExportFrame, coco_document, save_coco, save_interhand, write_export
from core.io.keypoints import load_interhand_keypoints, load_keypoints, load_keypoints_json
from core.types import Camera, TwoHandKeypoints
from main import main
from tests import golden

IH = golden.realdata_dir() / "interhand26m_samples"


def sample_frames(camera: Camera) -> list[ExportFrame]:
    right = place_template_hand("right", camera, None)
    left = place_template_hand("left", camera, right)
    codes = np.full((2, 21), 2, dtype=np.int8)
    codes[0, 4], codes[1, 8] = 1, 0  # left thumb tip occluded, right index tip outside
    frames = [ExportFrame(0, "f0.png", TwoHandKeypoints(left, right), codes)]
    shifted = right + [0.3, 0.0, 0.0]  # partly out of the image on the right
    frames.append(ExportFrame(7, "f7.png", TwoHandKeypoints(None, shifted), np.full((2, 21), 2, np.int8)))
    return frames


def test_coco_flags_boxes_and_categories():
    camera = Camera.default_for_image(320, 240)
    frames = sample_frames(camera)
    doc = coco_document(frames, camera)
    assert [c["name"] for c in doc["categories"]] == ["left_hand", "right_hand"]
    assert len(doc["categories"][0]["skeleton"]) == 20
    left, right, lone = doc["annotations"]
    assert (left["category_id"], right["category_id"], lone["image_id"]) == (1, 2, 2)
    kl, kr = np.reshape(left["keypoints"], (21, 3)), np.reshape(right["keypoints"], (21, 3))
    assert kl[4, 2] == 1 and kr[8, 2] == 0 and tuple(kr[8, :2]) == (0, 0)
    np.testing.assert_allclose(kl[0, :2], camera.project(frames[0].keypoints.left[:1])[0], atol=1e-3)
    assert left["num_keypoints"] == 21 and right["num_keypoints"] == 20
    x, y, w, h = left["bbox"]
    assert np.all(kl[:, 0] >= x - 1e-3) and np.all(kl[:, 0] <= x + w + 1e-3) and w > 10 and h > 10
    uv = camera.project(frames[1].keypoints.right)
    outside = (uv[:, 0] >= 320).sum()
    ko = np.reshape(lone["keypoints"], (21, 3))
    assert outside > 0 and (ko[:, 2] == 0).sum() == outside  # projected outside -> flag 0
    with pytest.raises(ExportError, match="no annotated frames"):
        coco_document([], camera)


def test_coco_export_loads_in_pycocotools_without_warnings(tmp_path):
    from pycocotools.coco import COCO

    camera = Camera.default_for_image(320, 240)
    path = save_coco(tmp_path / "coco.json", sample_frames(camera), camera)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("error")
        coco = COCO(str(path))
    assert sorted(coco.getCatIds()) == [1, 2] and len(coco.getImgIds()) == 2
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert {a["category_id"] for a in anns} == {1, 2}


def test_interhand_trio_reads_back_to_a_micrometre(tmp_path):
    camera = Camera(K=np.array([[500.0, 0, 161.5], [0, 505.0, 119.0], [0, 0, 1]]), width=320, height=240)
    frames = sample_frames(camera)
    written = save_interhand(tmp_path / "ih", frames, camera)
    assert sorted(p.name for p in written) == ["im2hands_camera.json", "im2hands_data.json",
                                               "im2hands_joint_3d.json"]  # fmt: skip
    for frame in frames:
        kps, cam = load_interhand_keypoints(tmp_path / "ih", frame.image)
        np.testing.assert_allclose(cam.K, camera.K)
        for side in ("left", "right"):
            ours = frame.keypoints.hand(side)
            assert (kps.hand(side) is None) == (ours is None)
            if ours is not None:
                assert np.abs(kps.hand(side) - ours).max() < 1e-6


def test_export_command_from_keypoints_json(tmp_path):
    camera = Camera.default_for_image(320, 240)
    own = write_export("json", tmp_path / "own.json", sample_frames(camera), camera)[0]
    loaded = load_keypoints_json(own)
    assert [f.frame_index for f in loaded.frames] == [0, 7] and loaded.frames[0].visibility["right"][8] == 0
    assert main(["export", str(own), "--format", "coco", "--out", str(tmp_path / "c.json")]) == 0
    coco = json.loads((tmp_path / "c.json").read_text())
    assert [im["frame_index"] for im in coco["images"]] == [0, 7] and len(coco["annotations"]) == 3
    assert main(["export", str(own), "--format", "interhand", "--out", str(tmp_path / "ih")]) == 0
    kps, _ = load_keypoints(tmp_path / "ih", "f7.png")
    assert kps.left is None and np.abs(kps.right - loaded.frames[1].keypoints.right).max() < 1e-6
    assert main(["export", str(tmp_path / "missing.json"), "--format", "coco", "--out", "x"]) == 2


def test_reconstruct_accepts_an_interhand_export(tmp_path):
    halo = golden.halo_checkpoint_path()
    image = IH / "image69148.jpg"
    if not halo.is_file() or not image.is_file():
        pytest.skip("official HALO checkpoint or InterHand2.6M samples not present")
    source, camera = load_keypoints(IH, image)
    frame = ExportFrame(0, image.name, source, np.full((2, 21), 2, np.int8))
    save_interhand(tmp_path / "export", [frame], camera)
    out = tmp_path / "rec"
    rc = main(["reconstruct", str(image), "--keypoints", str(tmp_path / "export"), "--weights", str(halo),
               "--resolution", "32", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert rc == 0
    used, cam = load_keypoints(out / "keypoints.json", image.name)
    for side in ("left", "right"):
        assert np.abs(used.hand(side) - source.hand(side)).max() < 1e-6
    assert (out / "left.ply").is_file() and (out / "right.ply").is_file()
