"""Bad inputs and faults, as a hostile user would try them: every reader, CLI command and app
entry point must fail with our own error naming the file and field (CLI: one ``error:``
line, exit 2, no traceback), never damage an earlier result, and keep memory flat.

Kept fast (about a minute on 2 CPU cores): tiny grids, tiny files, few repeats."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from core.errors import CheckpointError, ImageError, InputError, KeypointError, KeypointFileError
from core.io.keypoints import load_keypoints
from main import main
from tests import golden

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "samples" / "sample_0"
IH = golden.realdata_dir() / "interhand26m_samples"
PY = sys.executable


def _good_doc() -> dict:
    return json.loads((SAMPLE / "keypoints.json").read_text())


def _halo_path() -> Path:
    path = golden.halo_checkpoint_path()
    if not path.is_file():
        pytest.skip("official HALO checkpoint not present")
    return path


# --------------------------------------------------------------------------------------
# Keypoint JSON: one schema, every field
# --------------------------------------------------------------------------------------
def _set(path: str, value):
    """A mutation of the good document: ``path`` like 'camera.K' or 'frames.0.left'."""

    def mutate(doc):
        keys = path.split(".")
        target = doc
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        elif value is _DELETE:
            del target[last]
        else:
            target[last] = value
        return doc

    return mutate


_DELETE = object()
_K_ZERO_ROW = [[500.0, 0, 100], [0, 500.0, 100], [0, 0, 0]]
KEYPOINT_DOC_CASES = {
    "top-level list": (lambda d: [d], "format"),
    "top-level string": (lambda d: "hello", "format"),
    "wrong format": (_set("format", "other"), "format"),
    "format number": (_set("format", 3), "format"),
    "version string": (_set("version", "1"), "version"),
    "version 99": (_set("version", 99), "version"),
    "version 0": (_set("version", 0), "version"),
    "units km": (_set("units", "km"), "units"),
    "units list": (_set("units", ["m"]), "units"),
    "frame world": (_set("frame", "world"), "frame"),
    "joint order bad": (_set("joint_order", "xyz"), "joint_order"),
    "joint order list": (_set("joint_order", ["mano"]), "joint_order"),
    "camera list": (_set("camera", [1, 2, 3]), "camera"),
    "camera string": (_set("camera", "K"), "camera"),
    "camera K missing": (_set("camera.K", _DELETE), "camera"),
    "camera K 2x2": (_set("camera.K", [[1, 0], [0, 1]]), "K"),
    "camera K NaN": (_set("camera.K", [[float("nan"), 0, 1], [0, 1, 1], [0, 0, 1]]), "K"),
    "camera K strings": (_set("camera.K", [["a", 0, 1], [0, 1, 1], [0, 0, 1]]), "camera"),
    "camera K zero last row": (_set("camera.K", _K_ZERO_ROW), "last row"),
    "camera negative focal": (_set("camera.K", [[-5.0, 0, 1], [0, 5.0, 1], [0, 0, 1]]), "focal"),
    "camera width 0": (_set("camera.width", 0), "width"),
    "camera width negative": (_set("camera.width", -10), "width"),
    "camera width fraction": (_set("camera.width", 10.5), "width"),
    "camera width string": (_set("camera.width", "abc"), "camera"),
    "camera width bool": (_set("camera.width", True), "width"),
    "camera width huge": (_set("camera.width", 10**9), "width"),
    "camera height list": (_set("camera.height", [1]), "camera"),
    "frames missing": (_set("frames", _DELETE), "frames"),
    "frames object": (_set("frames", {"0": {}}), "frames"),
    "frame entry number": (_set("frames.0", 5), "frame 0"),
    "hand 20 joints": (lambda d: _set("frames.0.left", d["frames"][0]["left"][:20])(d), "21 joints"),
    "hand strings": (_set("frames.0.left", [["a", "b", "c"]] * 21), "numbers"),
    "hand NaN": (_set("frames.0.left", [[float("nan")] * 3] * 21), "NaN"),
    "hand dict": (_set("frames.0.left", {"x": 1}), "frame 0"),
    "hand ragged": (_set("frames.0.left", [[1, 2, 3]] * 20 + [[1, 2]]), "frame 0"),
    "hand number": (_set("frames.0.right", 7), "frame 0"),
    "visibility list": (_set("frames.0.visibility", [True] * 21), "visibility"),
    "visibility short": (_set("frames.0.visibility", {"left": [True] * 3}), "visibility"),
    "visibility bad side": (_set("frames.0.visibility", {"middle": [True] * 21}), "visibility"),
    "image number": (_set("frames.0.image", 12), "image"),
    "image list": (_set("frames.0.image", ["a.png"]), "image"),
}


@pytest.mark.parametrize("case", sorted(KEYPOINT_DOC_CASES))
def test_keypoint_json_schema_names_the_file_and_field(tmp_path, case):
    mutate, field = KEYPOINT_DOC_CASES[case]
    path = tmp_path / "kp.json"
    path.write_text(json.dumps(mutate(_good_doc())))
    with pytest.raises(KeypointFileError) as info:
        load_keypoints(path, SAMPLE / "image.png")
    assert str(path) in str(info.value) or path.name in str(info.value)
    assert field.lower() in str(info.value).lower()


RAW_FILE_CASES = {
    "empty": b"",
    "truncated json": b'{"format": "im2hands-studio/keypoints", "frames": [',
    "binary": bytes(range(256)) * 4,
    "utf16": '{"format": 1}'.encode("utf-16"),
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "nan literal": b"NaN",
    "huge number": b'{"format": "im2hands-studio/keypoints", "version": 1e999, "frames": []}',
}


@pytest.mark.parametrize("case", sorted(RAW_FILE_CASES))
def test_malformed_keypoint_bytes_fail_cleanly(tmp_path, case):
    path = tmp_path / "kp.json"
    path.write_bytes(RAW_FILE_CASES[case])
    with pytest.raises(KeypointFileError, match="kp.json"):
        load_keypoints(path, None)


def test_keypoint_paths_that_are_not_files(tmp_path):
    with pytest.raises(KeypointFileError, match="not found"):
        load_keypoints(tmp_path / "missing.json")
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(KeypointFileError):
        load_keypoints(folder, "x.png")
    with pytest.raises(KeypointFileError, match="unknown keypoint file type"):
        load_keypoints(tmp_path / "kp.txt")


# --------------------------------------------------------------------------------------
# Im2Hands .ply pairs
# --------------------------------------------------------------------------------------
def _ply(points) -> str:
    head = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\n"
    return head + "property float z\nend_header\n" + "".join(f"{x} {y} {z}\n" for x, y, z in points)


PLY_CASES = {
    "20 points": _ply([[0.0, 0.0, 1.0]] * 20),
    "nan points": _ply([["nan", 0.0, 1.0]] * 21),
    "garbage": "not a ply at all",
    "empty": "",
    "header only": "ply\nformat ascii 1.0\nelement vertex 21\nend_header\n",
    "binary lie": "ply\nformat binary_little_endian 1.0\nelement vertex 21\nproperty float x\n"
    "end_header\n\x00",
}


@pytest.mark.parametrize("case", sorted(PLY_CASES))
def test_ply_pair_readers_fail_cleanly(tmp_path, case):
    (tmp_path / "hands_left.ply").write_text(PLY_CASES[case])
    with pytest.raises(KeypointFileError, match="hands_left.ply"):
        load_keypoints(tmp_path / "hands_left.ply")


def test_ply_pair_without_any_file(tmp_path):
    with pytest.raises(KeypointFileError, match="no keypoint file found"):
        load_keypoints(tmp_path / "nothing_left.ply")


# --------------------------------------------------------------------------------------
# InterHand2.6M trio
# --------------------------------------------------------------------------------------
def _trio(tmp_path: Path, data=None, camera=None, joints=None) -> Path:
    folder = tmp_path / "ih"
    folder.mkdir()
    cam = {"focal": {"1": [1000.0, 1000.0]}, "princpt": {"1": [160.0, 120.0]},
           "campos": {"1": [0.0, 0.0, 0.0]}, "camrot": {"1": np.eye(3).tolist()}}  # fmt: skip
    base_data = {"images": [{"id": 1, "file_name": "a.jpg", "capture": 0, "camera": "1", "frame_idx": 5,
                             "width": 320, "height": 240}], "annotations": []}  # fmt: skip
    joints_mm = (np.random.default_rng(0).normal(0, 30, (42, 3)) + [0, 0, 800]).tolist()
    base_joints = {"0": {"5": {"world_coord": joints_mm, "joint_valid": [1] * 42}}}
    (folder / "x_data.json").write_text(json.dumps(base_data if data is None else data))
    (folder / "x_camera.json").write_text(json.dumps({"0": cam} if camera is None else camera))
    (folder / "x_joint_3d.json").write_text(json.dumps(base_joints if joints is None else joints))
    return folder


def _cam(**changes):
    cam = {"focal": {"1": [1000.0, 1000.0]}, "princpt": {"1": [160.0, 120.0]},
           "campos": {"1": [0.0, 0.0, 0.0]}, "camrot": {"1": np.eye(3).tolist()}}  # fmt: skip
    cam.update(changes)
    return {"0": cam}


INTERHAND_CASES = {
    "data is a list": dict(data=[1, 2]),
    "images not a list": dict(data={"images": 5}),
    "image not listed": dict(data={"images": [{"file_name": "b.jpg"}]}),
    "annotations of numbers": dict(
        data={
            "images": [
                {
                    "id": 1,
                    "file_name": "a.jpg",
                    "capture": 0,
                    "camera": "1",
                    "frame_idx": 5,
                    "width": 320,
                    "height": 240,
                }
            ],
            "annotations": [3, 4],
        }  # fmt: skip
    ),
    "camera is a list": dict(camera=[1]),
    "negative focal": dict(camera=_cam(focal={"1": [-5.0, 5.0]})),
    "focal one number": dict(camera=_cam(focal={"1": [5.0]})),
    "nan principal point": dict(camera=_cam(princpt={"1": [float("nan"), 1.0]})),
    "camrot 2x2": dict(camera=_cam(camrot={"1": [[1, 0], [0, 1]]})),
    "joints of strings": dict(joints={"0": {"5": {"world_coord": "abc", "joint_valid": [1] * 42}}}),
    "joints 10 rows": dict(joints={"0": {"5": {"world_coord": [[0, 0, 0]] * 10, "joint_valid": [1] * 10}}}),
    "frame missing": dict(joints={"0": {}}),
}


@pytest.mark.parametrize("case", sorted(INTERHAND_CASES))
def test_interhand_trio_fails_cleanly(tmp_path, case):
    folder = _trio(tmp_path, **INTERHAND_CASES[case])
    with pytest.raises(KeypointFileError):
        load_keypoints(folder, "a.jpg")


def test_interhand_trio_width_zero_is_refused(tmp_path):
    data = {"images": [{"id": 1, "file_name": "a.jpg", "capture": 0, "camera": "1", "frame_idx": 5,
                        "width": 0, "height": 240}]}  # fmt: skip
    with pytest.raises(KeypointFileError, match="width"):
        load_keypoints(_trio(tmp_path, data=data), "a.jpg")


def test_interhand_trio_that_is_good_still_reads(tmp_path):
    keypoints, camera = load_keypoints(_trio(tmp_path), "a.jpg")
    assert camera.width == 320 and keypoints.left is not None and keypoints.left.shape == (21, 3)


# --------------------------------------------------------------------------------------
# Camera files (detect / reconstruct --camera)
# --------------------------------------------------------------------------------------
CAMERA_FILE_CASES = {
    "not json": "{{{",
    "list": "[1, 2]",
    "K zero last row": json.dumps({"K": _K_ZERO_ROW, "width": 320, "height": 240}),
    "K nan": json.dumps({"K": [[float("nan"), 0, 1], [0, 1, 1], [0, 0, 1]], "width": 320, "height": 240}),
    "width zero": json.dumps({"K": [[500, 0, 160], [0, 500, 120], [0, 0, 1]], "width": 0, "height": 240}),
    "width string": json.dumps({"K": [[500, 0, 160], [0, 500, 120], [0, 0, 1]], "width": "x", "height": 240}),
    "interhand focal string": json.dumps(_cam(focal={"1": ["a", "b"]})),
}


@pytest.mark.parametrize("case", sorted(CAMERA_FILE_CASES))
def test_camera_files_fail_cleanly(tmp_path, case):
    from core.detect.intrinsics import CameraFileError, camera_from_file

    path = tmp_path / "cam.json"
    path.write_text(CAMERA_FILE_CASES[case])
    with pytest.raises(CameraFileError, match="cam.json"):
        camera_from_file(path, 320, 240)


# --------------------------------------------------------------------------------------
# Images: decoding, limits, EXIF
# --------------------------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression-bomb look-alike)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


IMAGE_CASES = {
    "empty": b"",
    "text": b"hello, not an image",
    "truncated png": None,  # filled in the test from a real PNG
    "bomb 20000 squared": _png_header_only(20000, 20000),
    "bomb wide": _png_header_only(200_000, 1000),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_images_fail_cleanly(tmp_path, case):
    from core.io.images import load_image_rgb

    data = IMAGE_CASES[case]
    if data is None:
        data = (SAMPLE / "image.png").read_bytes()[:300]
    path = tmp_path / "img.png"
    path.write_bytes(data)
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match="img.png"):
        load_image_rgb(path)
    assert time.perf_counter() - t0 < 5.0  # refused from the header, never decoded


def test_image_paths_that_are_not_images(tmp_path):
    from core.io.images import load_image_rgb

    with pytest.raises(ImageError, match="not found"):
        load_image_rgb(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="not found"):
        load_image_rgb(tmp_path)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_honoured(tmp_path, orientation):
    """A 40 x 20 photo with a red top-left quadrant, stored with each EXIF orientation:
    the decoded image must be what a viewer shows (PIL's exif_transpose as the reference)."""
    from PIL import Image, ImageOps

    from core.io.images import load_image_rgb

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:10, :20] = (255, 0, 0)
    pixels[10:, 20:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    image.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    got = load_image_rgb(path)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------------------
# Reconstruction settings
# --------------------------------------------------------------------------------------
SETTINGS_CASES = {
    "resolution 0": dict(resolution=0),
    "resolution 33": dict(resolution=33),
    "resolution 4096": dict(resolution=4096),
    "resolution 1024": dict(resolution=1024),
    "resolution string": dict(resolution="64"),
    "resolution float": dict(resolution=64.0),
    "resolution bool": dict(resolution=True),
    "preview 48": dict(preview_resolution=48),
    "refinement 48": dict(refinement_resolution=48),
    "box padding NaN": dict(box_padding=float("nan")),
    "box padding negative": dict(box_padding=-0.1),
    "box padding inf": dict(box_padding=float("inf")),
    "box padding 5": dict(box_padding=5.0),
    "skip margin negative": dict(skip_margin_m=-0.05),
    "skip margin zero": dict(skip_margin_m=0.0),
    "skip margin NaN": dict(skip_margin_m=float("nan")),
    "threshold 0": dict(threshold_init=0.0),
    "threshold 1": dict(threshold_ref=1.0),
    "threshold NaN": dict(threshold_init=float("nan")),
    "threshold string": dict(threshold_ref="0.5"),
    "anchors 0": dict(num_anchors=0),
    "anchors 1e9": dict(num_anchors=10**9),
    "points per batch 0": dict(points_per_batch=0),
    "device tpu": dict(device="tpu"),
    "device number": dict(device=3),
    "penetration string": dict(penetration="yes"),
    "mise resolution0 1": dict(mise_resolution0=1),
    "anchor seed negative": dict(anchor_seed=-1),
    "spacing zero": dict(penetration_spacing_m=0.0),
}


@pytest.mark.parametrize("case", sorted(SETTINGS_CASES))
def test_settings_are_validated(case):
    from core.engine import ReconstructionSettings, SettingsError

    changes = SETTINGS_CASES[case]
    with pytest.raises(SettingsError, match=next(iter(changes))):
        ReconstructionSettings(**changes)


def test_good_settings_stay_accepted():
    from core.engine import ReconstructionSettings

    s = ReconstructionSettings(resolution=np.int64(128), box_padding=np.float64(0.1), skip_margin_m=None)
    assert s.resolution == 128 and ReconstructionSettings(resolution=512).resolution == 512


# --------------------------------------------------------------------------------------
# Hand size, keypoint values, memory estimate (the engine's own checks)
# --------------------------------------------------------------------------------------
def _sample_keypoints():
    keypoints, _ = load_keypoints(SAMPLE / "keypoints.json", SAMPLE / "image.png")
    return keypoints


@pytest.mark.parametrize(
    ("scale", "hint"),
    [(1000.0, "millimetres"), (100.0, "centimetres"), (4.0, "metres"), (6.0, "metres"), (0.3, "metres")],
)
def test_implausible_hand_sizes_are_refused_with_a_units_hint(scale, hint):
    from core.engine.hands import hand_frames
    from core.types import TwoHandKeypoints

    k = _sample_keypoints()
    scaled = TwoHandKeypoints(left=k.left * scale, right=k.right * scale)
    with pytest.raises(KeypointError, match=hint):
        hand_frames(scaled)


@pytest.mark.parametrize(
    ("joint", "offset", "message"), [(8, 1e6, "apart"), (20, 0.5, "apart"), (None, 500.0, "from the camera")]
)
def test_one_wild_joint_or_a_far_hand_is_refused(joint, offset, message):
    from core.engine.hands import hand_frames
    from core.types import TwoHandKeypoints

    k = _sample_keypoints()
    left = k.left.copy()
    if joint is None:
        left[:, 2] += offset
    else:
        left[joint, 0] += offset
    with pytest.raises(KeypointError, match=message):
        hand_frames(TwoHandKeypoints(left=left, right=k.right))


def test_the_sample_hands_pass_the_size_check():
    from core.engine.hands import hand_frames

    assert set(hand_frames(_sample_keypoints())) == {"left", "right"}


def test_mise_refuses_a_grid_beyond_the_available_memory(monkeypatch):
    from core.engine import mise
    from core.errors import LimitError

    monkeypatch.setattr(mise, "available_memory_bytes", lambda: 50 * 2**20)
    with pytest.raises(LimitError, match="GiB"):
        mise.MultiResolutionGrid(32, 4)  # 512^3: about 0.9 GiB
    mise.MultiResolutionGrid(32, 1)  # 64^3 fits in 50 MiB
    assert mise.grid_memory_bytes(512) > 7 * mise.grid_memory_bytes(256)  # the cube of the side


# --------------------------------------------------------------------------------------
# Weights: our safetensors header, official pickles, limits, confinement
# --------------------------------------------------------------------------------------
def _header(network="halo_base", config="null", metadata="{}", version="1") -> dict:
    return {"format": "im2hands-studio", "format_version": version, "network": network,
            "config": config, "metadata": metadata}  # fmt: skip


def _write_st(path: Path, header: dict, tensors=None) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file(tensors or {"x": torch.zeros(2)}, str(path), metadata=header)
    return path


WEIGHTS_HEADER_CASES = {
    "no header": (None, "not saved by"),
    "version text": (_header(version="x"), "damaged header"),
    "version 99": (_header(version="99"), "format 99"),
    "config not json": (_header(config="{oops"), "damaged header"),
    "config list": (_header(network="init_occ", config="[1, 2]"), "config"),
    "metadata list": (_header(metadata="[1]"), "metadata"),
    "network number": (_header(network="7"), "network"),
    "huge hidden size": (
        _header(network="init_occ", config=json.dumps({"decoder": {"hidden_size": 10**6}})),
        "range",
    ),
    "NaN in config": (_header(network="init_occ", config='{"decoder": {"hidden_size": NaN}}'), "range"),
    "config of wrong types": (_header(network="init_occ", config=json.dumps({"decoder": "big"})), "init_occ"),
    "unknown network": (_header(network="teleporter", config="{}"), "teleporter"),
    "shared escapes": (
        _header(network="halo_base", metadata=json.dumps({"shared": {"a.": "../../x.safetensors"}})),
        "shared",
    ),  # noqa: E501
    "shared absolute": (
        _header(network="halo_base", metadata=json.dumps({"shared": {"a.": "/etc/passwd"}})),
        "shared",
    ),
    "shared subfolder": (
        _header(network="halo_base", metadata=json.dumps({"shared": {"a.": "d/e.safetensors"}})),
        "shared",
    ),  # noqa: E501
    "shared not a map": (_header(network="halo_base", metadata=json.dumps({"shared": ["x"]})), "shared"),
}


@pytest.mark.parametrize("case", sorted(WEIGHTS_HEADER_CASES))
def test_weights_headers_are_validated_before_anything_is_built(tmp_path, case):
    from core.models.registry import load_network as load_packed_network

    header, message = WEIGHTS_HEADER_CASES[case]
    path = tmp_path / "net.safetensors"
    if header is None:
        _write_st(path, {"other": "x"})
    else:
        _write_st(path, header)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=message) as info:
        load_packed_network(path)
    assert time.perf_counter() - t0 < 10.0  # no 1.4 TB network was attempted
    assert "weights_only=False" not in str(info.value)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\xff" * 8 + b"{}"])
def test_unreadable_safetensors_fail_cleanly(tmp_path, content):
    from core.models.registry import load_network as load_packed_network

    path = tmp_path / "net.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="net.safetensors"):
        load_packed_network(path)


def test_code_in_an_official_checkpoint_never_runs_and_the_message_gives_no_bad_advice(tmp_path):
    import torch

    from core.models.halo_base import load_torch_checkpoint

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "init_occ.pt"
    torch.save({"model": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError) as info:
        load_torch_checkpoint(path)
    assert not marker.exists()
    assert "weights_only" not in str(info.value) and "nothing in them was run" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"\x80\x02}q\x00."])
def test_damaged_official_checkpoints_fail_cleanly(tmp_path, content):
    from core.models.halo_base import load_torch_checkpoint

    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="model.pt"):
        load_torch_checkpoint(path)


def test_engine_on_a_bad_weights_folder(tmp_path):
    from core.engine import Engine

    with pytest.raises(InputError):
        Engine(tmp_path, device="cpu")


def test_no_pickle_in_the_library():
    offenders = []
    for path in (REPO / "core").rglob("*.py"):
        text = path.read_text()
        if "import pickle" in text or "pickle.load" in text or "allow_pickle=True" in text:
            offenders.append(path.name)
    assert offenders == []


def test_interhand_dataset_refuses_pickled_annotations(tmp_path):
    from core.training.datasets import DatasetError, InterHandDataset

    split = tmp_path / "img" / "test"
    for d in ("img", "anno"):
        (split / d).mkdir(parents=True)
    (tmp_path / "occ" / "test" / "points").mkdir(parents=True)
    (split / "anno" / "0.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(DatasetError, match="pkl"):
        InterHandDataset(tmp_path / "img", tmp_path / "occ", "test")


# --------------------------------------------------------------------------------------
# Atomic writes and output sets
# --------------------------------------------------------------------------------------
def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    from core.io.atomic import write_text_atomic

    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".a.json.{dead.pid}.xyz123.tmp"
    live = tmp_path / f".a.json.{os.getpid()}.abc987.tmp"
    stale.write_text("half")
    live.write_text("busy")
    write_text_atomic(tmp_path / "a.json", "{}")
    assert not stale.exists() and live.exists()
    assert (tmp_path / "a.json").read_text() == "{}"


def _fake_reconstruction(i: int, sides=("left", "right"), penetration=False):
    import trimesh

    from core.types import HandMesh

    box = trimesh.creation.box(extents=(0.05, 0.05, 0.05))
    mesh = HandMesh(np.asarray(box.vertices, np.float32) + [i, 0, 1], np.asarray(box.faces, np.int32),
                    np.zeros(len(box.vertices), bool))  # fmt: skip
    return SimpleNamespace(
        **{s: (mesh if s in sides else None) for s in ("left", "right")},
        penetration_mesh=mesh if penetration else None,
    )


def test_a_one_hand_run_removes_the_other_hands_old_mesh(tmp_path):
    from core.io.meshes import mesh_set_writers
    from core.io.output_set import OutputFolder

    def run(rec):
        out = OutputFolder(tmp_path / "out")
        for name, writer in mesh_set_writers(rec, "ply").items():
            out.add(name, writer)
        out.add("report.json", lambda p: p.write_text("{}"))
        return out.commit()

    run(_fake_reconstruction(0, penetration=True))
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"left.ply", "right.ply", "penetration.ply"}
    run(_fake_reconstruction(1, sides=("right",)))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json",
        "report.json",
        "right.ply",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left


def test_output_folder_without_renameat2_and_after_a_kill_between_its_renames(tmp_path, monkeypatch):
    from core.io import output_set

    monkeypatch.setattr(output_set, "_exchange", lambda a, b: False)  # e.g. not Linux
    out_path = tmp_path / "out"
    for i in range(2):
        out = output_set.OutputFolder(out_path)
        out.add("report.json", lambda p, i=i: p.write_text(json.dumps({"i": i})))
        out.commit()
    assert json.loads((out_path / "report.json").read_text()) == {"i": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    os.rename(out_path, tmp_path / f".out.old-{dead.pid}")  # killed between the two renames
    (tmp_path / f".out.staging-{dead.pid}").mkdir()
    output_set._remove_stale_side_folders(out_path)  # what the next run does first
    assert json.loads((out_path / "report.json").read_text()) == {"i": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("kind", ["file", "foreign folder", "unwritable parent"])
def test_bad_output_folders_are_refused_before_any_work(tmp_path, kind):
    from core.io.output_set import OutputFolder, OutputPathError

    target = tmp_path / "out"
    if kind == "file":
        target.write_text("x")
    elif kind == "foreign folder":
        target.mkdir()
        (target / "holiday.jpg").write_bytes(b"precious")
    else:
        if os.geteuid() == 0:
            pytest.skip("root may write into any folder")
        tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="out"):
            OutputFolder(target)
    finally:
        tmp_path.chmod(0o700)
    if kind == "foreign folder":
        assert (target / "holiday.jpg").read_bytes() == b"precious"


def test_app_export_replaces_its_own_parts_and_nothing_else(tmp_path):
    from app.export import ExportError, export_meshes

    (tmp_path / "hands_notes.txt").write_text("mine")
    written = export_meshes(tmp_path / "hands.ply", _fake_reconstruction(0, penetration=True))
    assert sorted(p.name for p in written) == ["hands_left.ply", "hands_penetration.ply", "hands_right.ply"]
    export_meshes(tmp_path / "hands.ply", _fake_reconstruction(1, sides=("left",)))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["hands.manifest.json", "hands_left.ply", "hands_notes.txt"]
    for bad in (tmp_path / "hands.stl", tmp_path):
        with pytest.raises(ExportError, match="unsupported mesh format"):
            export_meshes(bad, _fake_reconstruction(0))
    with pytest.raises(ExportError, match="no reconstructed mesh"):
        export_meshes(tmp_path / "none.ply", None)
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(InputError, match="blocker"):
        export_meshes(tmp_path / "blocker" / "x.ply", _fake_reconstruction(0))


# --------------------------------------------------------------------------------------
# kill -9 while writing: the old set or the new one, never a mix or a 0-byte file
# --------------------------------------------------------------------------------------
_KILL_SCRIPTS = {
    "meshes": """
import sys, json
from pathlib import Path
from tests.test_bad_inputs import _fake_reconstruction
from core.io.meshes import mesh_set_writers
from core.io.output_set import OutputFolder
for i in range(100000):
    out = OutputFolder(Path(sys.argv[1]) / "out")
    rec = _fake_reconstruction(i, sides=("left", "right") if i % 2 else ("left",), penetration=i % 3 == 0)
    for name, writer in mesh_set_writers(rec, "ply").items():
        out.add(name, writer)
    out.add("report.json", lambda p, i=i: p.write_text(json.dumps({"i": i})))
    out.commit()
    print("ready", flush=True)
""",
    "project": """
import sys
from pathlib import Path
from app.project import write_json_atomic
for i in range(100000):
    write_json_atomic(Path(sys.argv[1]) / "p.im2hands.json", {"i": i, "frames": [[i] * 21] * (1 + i % 50)})
    print("ready", flush=True)
""",
    "export": """
import sys
from pathlib import Path
from tests.test_bad_inputs import _fake_reconstruction
from app.export import export_meshes
for i in range(100000):
    export_meshes(Path(sys.argv[1]) / "hands.ply", _fake_reconstruction(i, penetration=i % 2 == 0))
    print("ready", flush=True)
""",
    "weights": """
import sys
import torch
from pathlib import Path
from core.checkpoints import save_checkpoint
net = torch.nn.Linear(256, 256)
for i in range(100000):
    with torch.no_grad():
        net.weight.fill_(i)
    save_checkpoint(Path(sys.argv[1]) / "w.safetensors", net, "halo_base", metadata={"i": i})
    print("ready", flush=True)
""",
}


def _check_after_kill(kind: str, folder: Path) -> None:
    import trimesh

    if kind == "meshes":
        out = folder / "out"
        manifest = json.loads((out / "manifest.json").read_text())
        assert sorted(manifest["files"]) == sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
        i = json.loads((out / "report.json").read_text())["i"]
        for name in manifest["files"]:
            if name.endswith(".ply"):
                mesh = trimesh.load(out / name, process=False)
                assert round(float(mesh.vertices[:, 0].mean())) == i  # one run's set, not a mix
        assert ("right.ply" in manifest["files"]) == bool(i % 2)
    elif kind == "project":
        doc = json.loads((folder / "p.im2hands.json").read_text())
        assert len(doc["frames"]) == 1 + doc["i"] % 50
    elif kind == "export":
        manifest = json.loads((folder / "hands.manifest.json").read_text())
        for name in manifest["files"]:
            mesh = trimesh.load(folder / name, process=False)
            assert len(mesh.faces) == 12
    else:
        from safetensors.torch import load_file

        from core.checkpoints import read_checkpoint_info

        i = read_checkpoint_info(folder / "w.safetensors").metadata["i"]
        assert float(load_file(str(folder / "w.safetensors"))["weight"][0, 0]) == i


@pytest.mark.parametrize("kind", sorted(_KILL_SCRIPTS))
@pytest.mark.parametrize("trial", [0, 1])
def test_kill_9_while_writing_leaves_a_complete_set(tmp_path, kind, trial):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([PY, "-c", _KILL_SCRIPTS[kind], str(tmp_path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        time.sleep(random.Random(hash((kind, trial))).uniform(0.05, 0.4))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    _check_after_kill(kind, tmp_path)
    # The next write cleans up what the killed writer left behind.
    if kind == "project":
        from app.project import write_json_atomic

        write_json_atomic(tmp_path / "p.im2hands.json", {"i": 0, "frames": [[0] * 21]})
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert leftovers == []


# --------------------------------------------------------------------------------------
# The CLI: one line, exit 2, never a traceback
# --------------------------------------------------------------------------------------
def _cli(capsys, argv) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


def _assert_clean_error(rc: int, err: str, expected: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert expected.lower() in lines[-1].lower(), lines[-1]


def _reconstruct_args(tmp_path, **over) -> list[str]:
    args = {"image": str(SAMPLE / "image.png"), "--keypoints": str(SAMPLE / "keypoints.json"),
            "--weights": str(tmp_path / "no_weights_needed"), "--resolution": "32",
            "--out": str(tmp_path / "out")}  # fmt: skip
    args.update(over)
    out = ["reconstruct", args.pop("image")]
    for k, v in args.items():
        if v is not None:
            out += [k, v]
    return out


def _cli_case_setup(tmp_path: Path, case: str) -> dict:
    """Arguments of one bad ``reconstruct`` call (checked before the weights are read)."""
    (tmp_path / "a_file").write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.pdf").write_text("keep me")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{oops")
    garbage_img = tmp_path / "garbage.png"
    garbage_img.write_bytes(b"not an image")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(20000, 20000))
    doc = _good_doc()
    doc["camera"]["width"] = 0
    zero_cam = tmp_path / "zero_cam.json"
    zero_cam.write_text(json.dumps(doc))
    return {
        "out is a file": ({"--out": str(tmp_path / "a_file")}, "is a file"),
        "out is foreign": ({"--out": str(foreign)}, "choose a new or empty folder"),
        "out below a file": ({"--out": str(tmp_path / "a_file" / "out")}, "is a file"),
        "overlay below a file": ({"--overlay": str(tmp_path / "a_file" / "o.png")}, "is a file"),
        "overlay bad suffix": ({"--overlay": str(tmp_path / "o.xyz")}, "must end in"),
        "overlay is a folder": ({"--overlay": str(foreign)}, "must end"),
        "resolution 4096": ({"--resolution": "4096"}, "limit of 512"),
        "resolution 33": ({"--resolution": "33"}, "power of two"),
        "resolution 0": ({"--resolution": "0"}, "resolution"),
        "refinement 48": ({"--refinement-resolution": "48"}, "refinement_resolution"),
        "keypoints missing": ({"--keypoints": str(tmp_path / "none.json")}, "not found"),
        "keypoints bad json": ({"--keypoints": str(bad_json)}, "not valid json"),
        "keypoints camera width 0": ({"--keypoints": str(zero_cam)}, "width"),
        "keypoints folder empty": ({"--keypoints": str(foreign)}, "interhand"),
        "image missing": ({"image": str(tmp_path / "none.png")}, "not found"),
        "image garbage": ({"image": str(garbage_img)}, "not an image"),
        "image bomb": ({"image": str(bomb)}, "exceeds the limit"),
        "weights missing": ({}, "no_weights_needed"),
    }[case]


CLI_CASES = (
    "out is a file", "out is foreign", "out below a file", "overlay below a file", "overlay bad suffix",
    "overlay is a folder", "resolution 4096", "resolution 33", "resolution 0", "refinement 48",
    "keypoints missing", "keypoints bad json", "keypoints camera width 0", "keypoints folder empty",
    "image missing", "image garbage", "image bomb", "weights missing",
)  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES)
def test_reconstruct_cli_bad_inputs(tmp_path, capsys, case):
    over, expected = _cli_case_setup(tmp_path, case)
    rc, err = _cli(capsys, _reconstruct_args(tmp_path, **over))
    _assert_clean_error(rc, err, expected)
    assert not (tmp_path / "out").exists()  # nothing written on failure
    assert (tmp_path / "foreign" / "thesis.pdf").read_text() == "keep me"


@pytest.mark.parametrize(("scale", "hint"), [(1000.0, "millimetres"), (4.0, "human range")])
def test_reconstruct_cli_refuses_implausible_hands(tmp_path, capsys, scale, hint):
    halo = _halo_path()
    doc = _good_doc()
    for frame in doc["frames"]:
        for side in ("left", "right"):
            if frame[side]:
                frame[side] = (np.asarray(frame[side]) * scale).tolist()
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc))
    rc, err = _cli(capsys, _reconstruct_args(tmp_path, **{"--keypoints": str(path), "--weights": str(halo)}))
    _assert_clean_error(rc, err, hint)


def test_reconstruct_cli_keeps_the_old_set_when_a_later_run_fails(tmp_path, capsys):
    halo = _halo_path()
    args = _reconstruct_args(tmp_path, **{"--weights": str(halo)})
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    rc, err = _cli(capsys, _reconstruct_args(tmp_path, **{"--weights": str(halo), "--keypoints": str(bad)}))
    _assert_clean_error(rc, err, "bad.json")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


OTHER_CLI_CASES = {
    "detect missing input": (["detect", "{tmp}/none.png", "--out", "{tmp}/k.json"], "not found"),
    "detect out is a folder": (["detect", str(SAMPLE / "image.png"), "--out", "{tmp}"], "must end in"),
    "detect every 0": (
        ["detect", str(SAMPLE / "image.png"), "--out", "{tmp}/k.json", "--every", "0"],
        "--every",
    ),
    "train missing config": (
        ["train", "init", "--config", "{tmp}/none.json", "--out", "{tmp}/t"],
        "none.json",
    ),
    "train config list": (
        ["train", "init", "--config", "{tmp}/list.json", "--out", "{tmp}/t"],
        "list.json",
    ),
    "evaluate bad data": (["evaluate", "--data", "nonsense", "--weights", "{tmp}"], "data"),
    "evaluate shuffle one sample": (
        ["evaluate", "--data", "synthetic:seed=1,count=1", "--shuffle-images", "--weights", "{tmp}"],
        "at least 2 test samples",
    ),
}


@pytest.mark.parametrize("case", sorted(OTHER_CLI_CASES))
def test_other_commands_fail_with_one_line(tmp_path, capsys, case):
    argv, expected = OTHER_CLI_CASES[case]
    (tmp_path / "list.json").write_text("[1, 2]")
    rc, err = _cli(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv])
    _assert_clean_error(rc, err, expected)


@pytest.mark.parametrize(
    "argv",
    [[], ["reconstruct"], ["reconstruct", "x", "--resolution", "abc", "--out", "y"], ["teleport"],
     ["reconstruct", "x", "--out", "y", "--format", "stl"], ["gui", "--device", "tpu"]],
)  # fmt: skip
def test_usage_mistakes_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_an_internal_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import core.cli.reconstruct as command

    def boom(args):
        raise RuntimeError("something broke inside")

    monkeypatch.setattr(command, "run", boom)
    rc, err = _cli(capsys, _reconstruct_args(tmp_path))
    _assert_clean_error(rc, err, "internal error (RuntimeError: something broke inside)")
    rc, err = _cli(capsys, [*_reconstruct_args(tmp_path), "--debug"])
    assert rc == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: internal")


def test_a_file_system_error_names_the_path(tmp_path, capsys, monkeypatch):
    import core.cli.reconstruct as command

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(command, "run", denied)
    rc, err = _cli(capsys, _reconstruct_args(tmp_path))
    _assert_clean_error(rc, err, f"cannot access {tmp_path / 'x'}: permission denied")


# --------------------------------------------------------------------------------------
# Videos: truncation is reported
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def truncated_video(tmp_path_factory) -> tuple[Path, int]:
    import cv2

    folder = tmp_path_factory.mktemp("video")
    path = folder / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(40):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = path.read_bytes()
    cut = folder / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    return cut, 40


def test_a_truncated_video_is_reported(truncated_video):
    from core.detect.video import VideoReader

    path, _ = truncated_video
    with VideoReader(path) as video:
        frames = sum(1 for _ in video.frames())
        if video.frame_count <= frames:
            pytest.skip("this OpenCV build reports no frame count for a cut AVI")
        assert video.truncated_at == frames
        assert f"only {frames} could be decoded" in video.truncation_warning


def test_the_app_reports_a_frame_past_the_truncation(truncated_video):
    from app.media import MediaError, open_media

    path, _ = truncated_video
    source = open_media(path)
    try:
        with pytest.raises(MediaError, match="truncated"):
            for index in range(len(source)):
                source.frame_rgb(index)
    finally:
        source.close()


# --------------------------------------------------------------------------------------
# App entry points (no Qt): projects, media, keypoint files
# --------------------------------------------------------------------------------------
PROJECT_CASES = {
    "not json": "{{",
    "list": "[]",
    "no format": json.dumps({"version": 1}),
    "version text": json.dumps({"format": "im2hands-studio-project", "version": "1"}),
    "version 99": json.dumps({"format": "im2hands-studio-project", "version": 99}),
    "media list": json.dumps({"format": "im2hands-studio-project", "version": 1, "media": ["x"]}),
    "media path number": json.dumps(
        {"format": "im2hands-studio-project", "version": 1, "media": {"kind": "image", "path": 5}}
    ),
    "frames string": json.dumps({"format": "im2hands-studio-project", "version": 1, "frames": "zzz"}),
    "frame without index": json.dumps({"format": "im2hands-studio-project", "version": 1, "frames": [{}]}),
    "hands wrong shape": json.dumps(
        {
            "format": "im2hands-studio-project",
            "version": 1,
            "frames": [{"index": 0, "edited": {"left": [[1, 2]]}}],
        }
    ),
    "current frame text": json.dumps(
        {"format": "im2hands-studio-project", "version": 1, "current_frame": "a"}
    ),
    "settings list": json.dumps({"format": "im2hands-studio-project", "version": 1, "settings": [1]}),
    "camera K zero row": json.dumps(
        {
            "format": "im2hands-studio-project",
            "version": 1,
            "camera": {"K": _K_ZERO_ROW, "width": 2, "height": 2},
        }
    ),
    "visible of numbers": json.dumps(
        {"format": "im2hands-studio-project", "version": 1, "frames": [{"index": 0, "visible": {"left": 3}}]}
    ),
}


@pytest.mark.parametrize("case", sorted(PROJECT_CASES))
def test_bad_projects_fail_with_our_error(tmp_path, case):
    from app.project import ProjectFileError, load_project_file

    path = tmp_path / "bad.im2hands.json"
    path.write_text(PROJECT_CASES[case])
    with pytest.raises(ProjectFileError):
        load_project_file(path)


MEDIA_CASES = {
    "garbage video": ("clip.mp4", b"\x00" * 100),
    "empty image": ("a.png", b""),
    "text as jpeg": ("a.jpg", b"hello"),
    "unknown suffix": ("a.xyz", b"hello"),
    "bomb": ("a.png", _png_header_only(30000, 30000)),
}


@pytest.mark.parametrize("case", sorted(MEDIA_CASES))
def test_app_media_fails_cleanly(tmp_path, case):
    from app.media import open_media

    name, data = MEDIA_CASES[case]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(InputError):
        open_media(tmp_path / name)


def test_app_media_empty_folder_and_missing_path(tmp_path):
    from app.media import MediaError, open_media

    with pytest.raises(MediaError, match="no images"):
        open_media(tmp_path)
    with pytest.raises(MediaError, match="not found"):
        open_media(tmp_path / "missing.png")


def test_gui_open_of_a_bad_project_reports_and_exits_without_aborting(tmp_path):
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        pytest.skip("needs a display (pytest-xvfb provides one)")
    bad = tmp_path / "bad.im2hands.json"
    bad.write_text(PROJECT_CASES["media list"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [PY, "main.py", "gui", "--open", str(bad), "--screenshot", str(tmp_path / "s.png"), "--exit",
         "--timeout", "30", "--threads", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]  # an error was shown; no SIGABRT (-6)
    assert "error: Open project: bad.im2hands.json: 'media'" in proc.stderr


# --------------------------------------------------------------------------------------
# Memory: repeated reconstructions stay flat
# --------------------------------------------------------------------------------------
def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


def test_repeated_reconstructions_keep_memory_flat():
    from core.engine import Engine, ReconstructionSettings
    from core.io.images import load_image_rgb
    from core.types import Camera, TwoHandKeypoints

    engine = Engine(_halo_path(), device="cpu")
    image = load_image_rgb(SAMPLE / "image.png")
    keypoints, camera = load_keypoints(SAMPLE / "keypoints.json", SAMPLE / "image.png")
    camera = camera or Camera.default_for_image(image.shape[1], image.shape[0])
    settings = ReconstructionSettings(resolution=32, preview_resolution=32)

    def once(i: int) -> None:
        shift = np.array([0.001 * (i % 7), 0.0, 0.0])  # new work each time, not a cache hit
        moved = TwoHandKeypoints(left=keypoints.left + shift, right=keypoints.right + shift)
        rec = engine.reconstruct(image, camera, moved, settings)
        assert rec.left is not None and not rec.left.is_empty

    for i in range(3):
        once(i)
    baseline = _rss_mb()
    for i in range(3, 23):
        once(i)
    grown = _rss_mb() - baseline
    assert grown < 50.0, f"RSS grew {grown:.1f} MB over 20 reconstructions"


# --------------------------------------------------------------------------------------
# The app's window: every entry point reports to the error panel and the app lives on
# --------------------------------------------------------------------------------------
@pytest.mark.gui
def test_every_window_entry_point_reports_to_the_error_panel(qtbot, tmp_path, monkeypatch):
    from PySide6.QtGui import QGuiApplication

    if QGuiApplication.platformName() != "xcb":
        pytest.skip("the window's 3D view needs an X server")
    from test_app_fakes import FakeEngine
    from test_app_gui import make_window, write_sample

    window = make_window(qtbot, tmp_path, monkeypatch, FakeEngine(stage_delay_s=0.0))
    errors = lambda: len(window.error_panel.entries())  # noqa: E731
    (tmp_path / "garbage.png").write_bytes(b"nope")
    (tmp_path / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    bad_opens = [tmp_path / "garbage.png", tmp_path / "bomb.png", tmp_path / "missing.mp4"]
    for i, case in enumerate(sorted(PROJECT_CASES)):
        path = tmp_path / f"p{i}.im2hands.json"
        path.write_text(PROJECT_CASES[case])
        bad_opens.append(path)
    for path in bad_opens:
        before = errors()
        assert window.open_path(path) is False
        assert errors() == before + 1, path
    assert window.export_meshes(tmp_path / "none.ply") == [] and errors() == len(bad_opens) + 1
    image_path, _ = write_sample(tmp_path)
    assert window.open_path(image_path)
    (tmp_path / "kp.json").write_text('{"format": "im2hands-studio/keypoints", "version": 1, "frames": 3}')
    assert window.load_keypoints(tmp_path / "kp.json") is False
    assert "frames" in window.error_panel.entries()[-1].message
    (tmp_path / "a_file").write_text("x")
    assert window.save_screenshot(tmp_path / "a_file" / "shot.png") is False
    assert window.export_keypoints(tmp_path / "a_file" / "k.json") is False
    monkeypatch.setattr(window.doc, "autosave", lambda: (_ for _ in ()).throw(OSError(28, "No space left")))
    before = errors()
    window._autosave()
    window._autosave()  # the same failure is reported once
    assert errors() == before + 1 and "No space left" in window.error_panel.entries()[-1].message
    assert window.isVisible()


def test_detect_cli_warns_about_a_truncated_video_and_stores_the_counts(tmp_path, capsys, truncated_video):
    path, _ = truncated_video
    from core.detect.video import VideoReader

    with VideoReader(path) as video:
        declared = video.frame_count
    out = tmp_path / "k.json"
    assert main(["detect", str(path), "--out", str(out), "--every", "8", "--no-retries"]) == 0
    err = capsys.readouterr().err
    doc = json.loads(out.read_text())
    if declared <= doc["video"]["frames_decoded"]:
        pytest.skip("this OpenCV build reports no frame count for a cut AVI")
    assert doc["video"]["truncated"] is True and doc["video"]["frames_declared"] == declared
    assert "is truncated" in err and f"only {doc['video']['frames_decoded']} could be decoded" in err
