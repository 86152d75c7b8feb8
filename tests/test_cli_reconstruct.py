"""`main.py reconstruct` end to end (HALO-only mode, small grid) and `main.py bench --quick`."""

import json

import numpy as np
import pytest
import trimesh

from core.io.keypoints import load_keypoints
from main import main
from tests import golden

IH = golden.realdata_dir() / "interhand26m_samples"


@pytest.fixture(scope="module")
def halo_path():
    path = golden.halo_checkpoint_path()
    if not path.is_file() or not (IH / "image69148.jpg").is_file():
        pytest.skip("official HALO checkpoint or InterHand2.6M samples not present")
    return path


@pytest.mark.parametrize("fmt", ["ply", "glb"])
def test_reconstruct_writes_meshes_keypoints_and_report(tmp_path, halo_path, fmt):
    out = tmp_path / "out"
    rc = main(
        [
            "reconstruct",
            str(IH / "image69148.jpg"),
            "--keypoints",
            str(IH),
            "--weights",
            str(halo_path),
            "--resolution",
            "64",
            "--device",
            "cpu",
            "--format",
            fmt,
            "--out",
            str(out),
            *(["--resolve-contact"] if fmt == "glb" else []),
        ]
    )
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "halo_only" and report["resolution"] == 64
    assert {"total", "meshes", "penetration"} <= set(report["timings_s"])
    assert ("contact" in report["timings_s"]) == (fmt == "glb")  # --resolve-contact ran
    assert report["penetration_volume_cm3"] >= 0.0
    kp_in, _ = load_keypoints(IH, IH / "image69148.jpg")
    kp_out, cam = load_keypoints(out / "keypoints.json", "image69148.jpg")
    np.testing.assert_allclose(kp_out.right, kp_in.right)
    assert cam.width == 334
    if fmt == "glb":  # one scene whose nodes are the parts (core.io.meshes' convention)
        scene = trimesh.load(out / "hands.glb", process=False)
        meshes = {side: scene.geometry[side] for side in ("left", "right")}
    else:
        meshes = {
            side: trimesh.load(out / f"{side}.{fmt}", force="mesh", process=False)
            for side in ("left", "right")
        }
    for side, mesh in meshes.items():
        assert len(mesh.faces) == report["hands"][side]["faces"]
        # Camera frame, metres: the mesh sits around the hand ~1.1 m from the camera.
        assert 0.8 < float(np.median(np.asarray(mesh.vertices)[:, 2])) < 1.5


def test_reconstruct_detects_the_hands_when_no_keypoints_are_given(tmp_path, halo_path):
    photo = golden.realdata_dir() / "images/two_hands/mediapipe_samples_hand_landmarker_test_image.jpg"
    if not photo.is_file():
        pytest.skip("realdata photo not present")
    out, overlay = tmp_path / "out", tmp_path / "overlay.png"
    args = ["reconstruct", str(photo), "--weights", str(halo_path), "--resolution", "64"]
    assert main([*args, "--out", str(out), "--overlay", str(overlay)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["keypoints_file"] == "detected"
    assert set(report["hands"]) == {"left", "right"}  # both thumbs-up hands found and reconstructed
    assert any("detected" in note for note in report["notes"])
    from core.io.images import load_image_rgb

    photo_rgb, drawn = load_image_rgb(photo), load_image_rgb(overlay)
    assert drawn.shape == photo_rgb.shape
    changed = np.abs(drawn.astype(int) - photo_rgb.astype(int)).max(axis=-1) > 30
    assert 0.005 < changed.mean() < 0.5  # the meshes cover the hands, not the whole photo


def test_reconstruct_without_hands_or_with_a_bad_file_fails_clearly(tmp_path, halo_path, capsys):
    blank = tmp_path / "blank.png"
    from core.io.images import save_image_rgb

    save_image_rgb(blank, np.full((240, 320, 3), 128, dtype=np.uint8))
    assert main(["reconstruct", str(blank), "--weights", str(halo_path), "--out", str(tmp_path / "o1")]) == 2
    assert "no hand was detected" in capsys.readouterr().err
    image = str(IH / "image69148.jpg")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert (
        main(
            [
                "reconstruct",
                image,
                "--keypoints",
                str(bad),
                "--weights",
                str(halo_path),
                "--out",
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )
    assert "not valid JSON" in capsys.readouterr().err


def test_bench_quick_reports_the_promised_keys(tmp_path, halo_path):
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(path), "--device", "cpu"]) == 0
    report = json.loads(path.read_text())
    for key in (
        "device",
        "preview_s",
        "final_s",
        "reference_s",
        "speedup_vs_reference",
        "mesh_iou_vs_reference",
        "chamfer_mm_vs_reference",
        "drag_update_s",
    ):
        assert key in report, key
    halo = report["halo_only"]
    # Same refinement rule, same network: the engine's meshes equal the reference's.
    assert report["mesh_iou_vs_reference"] > 0.999 and report["chamfer_mm_vs_reference"] < 0.01
    assert halo["final_evaluations"]["init_occ"] < halo["reference_evaluations"]
    assert report["preview_s"] > 0 and report["drag_update_s"] > 0 and report["bench_wall_s"] < 60


def _official_timing(part: str) -> list[dict]:
    path = golden.golden_dir() / "timing.json"
    if not path.is_file():
        pytest.skip("golden timing.json not present")
    return json.loads(path.read_text())[part]


def test_bench_against_the_official_codes_timings_uses_the_same_work(halo_path):
    import torch

    from core.bench.official_code import bench_vs_official_code

    report = bench_vs_official_code(torch.device("cpu"), skip_margin_m=None, max_poses=1)
    if report is None:
        pytest.skip("golden timing.json / halo_base.npz not present")
    official = _official_timing("halo_base_mise")["timing"][0]
    row = report["per_pose"][0]
    # Same rule, same checkpoint, same matrices: the same points and the official mesh.
    assert row["official_evaluations"] == official["evaluated_points"]
    assert row["our_evaluations"] == row["official_evaluations"]
    assert report["worst_chamfer_mm_vs_official_mesh"] < 1e-3
    assert report["official_mean_s"] == official["wall_time_s"] and report["speedup_vs_official_code"] > 0


def test_bench_of_network_i_against_the_official_codes_timings_runs_on_the_golden_inputs():
    import torch

    from core.bench.official_code import bench_init_vs_official_code

    golden.require_golden_dir()
    official = _official_timing("init_occ_mise")[0]
    state = golden.official_state_dict("init_occ")
    report = bench_init_vs_official_code(
        torch.device("cpu"), state, max_samples=1, resolution=64, no_skipping=False
    )
    if report is None:
        pytest.skip("golden two_hand_batch.npz not present")
    row = report["per_sample"][0]
    assert row["official_evaluations"] == official["evaluated_points_both_hands"]
    # Both hands at 64: MISE evaluates a part of each hand's 65^3 lattice.
    assert 0 < row["our_evaluations"] < 2 * 65**3
    assert report["ours_mean_s"] > 0 and report["official_mean_s"] == official["wall_time_s"]
