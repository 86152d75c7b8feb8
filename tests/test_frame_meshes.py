"""Meshes of every frame (core.io.frame_meshes): one output set per frame, never a partial
frame folder or a stray temporary, foreign folders refused before any reconstruction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from core.errors import InputError
from core.io.frame_meshes import MeshJobFrame, export_frame_meshes
from core.io.output_set import OutputPathError
from core.types import HandMesh, Reconstruction, TwoHandKeypoints

_BOX = trimesh.creation.box(extents=(0.05, 0.05, 0.05))


def _mesh(x: float) -> HandMesh:
    vertices = np.asarray(_BOX.vertices, np.float32) + [x, 0.0, 0.5]
    return HandMesh(vertices, np.asarray(_BOX.faces, np.int32), np.zeros(len(vertices), bool))


class BoxEngine:
    """Each hand a 5 cm box at x = frame index (cm) -> the written file says which frame it is."""

    def __init__(self, empty_at: int | None = None, shift_m: float = 0.0):
        self.calls = 0
        self.empty_at = empty_at
        self.shift_m = shift_m
        self.frame = -1  # the frame being reconstructed / written

    def __call__(self, image: np.ndarray, keypoints: TwoHandKeypoints) -> Reconstruction:
        self.calls += 1
        self.frame = index = int(image[0, 0, 0])
        if index == self.empty_at:
            return Reconstruction(left=None, right=None, keypoints=keypoints, camera=None)
        x = index / 100 + self.shift_m
        return Reconstruction(left=_mesh(x), right=_mesh(-x), keypoints=keypoints, camera=None)


def _frames(count: int) -> list[MeshJobFrame]:
    hands = TwoHandKeypoints(left=np.zeros((21, 3)) + 0.5, right=np.zeros((21, 3)) + 0.5)
    return [MeshJobFrame(i, f"f{i}", lambda i=i: np.full((4, 4, 3), i, np.uint8), hands)
            for i in range(count)]  # fmt: skip


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _left_x(path: Path) -> float:
    return float(trimesh.load(path, process=False).vertices[:, 0].mean())


def test_every_frame_is_a_complete_folder_with_its_manifest(tmp_path):
    progress = []
    result = export_frame_meshes(BoxEngine(), _frames(3), tmp_path / "out",
                                 progress=lambda d, t: progress.append((d, t)))  # fmt: skip
    assert progress == [(1, 3), (2, 3), (3, 3)] and not result.cancelled and result.empty_frames == []
    parts = ("", "/left.ply", "/manifest.json", "/right.ply")
    assert _listing(tmp_path / "out") == [f"f{i}{part}" for i in range(3) for part in parts]
    manifest = json.loads((tmp_path / "out" / "f2" / "manifest.json").read_text())
    assert manifest["frame_index"] == 2 and manifest["files"] == ["left.ply", "right.ply"]
    assert _left_x(tmp_path / "out" / "f2" / "left.ply") == pytest.approx(0.02, abs=1e-6)
    assert sorted(result.written) == sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())


def test_a_failure_mid_export_leaves_no_partial_file_or_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    export_frame_meshes(BoxEngine(), _frames(3), out)  # an earlier complete export
    before = _listing(out)
    old_f1 = (out / "f1" / "left.ply").read_bytes()

    # The next export (every hand moved 1 m) fails half-way through frame 1's right mesh file
    # (disk full, say).
    engine = BoxEngine(shift_m=1.0)
    original = trimesh.Trimesh.export

    def failing_export(self, file_obj=None, file_type=None, **kw):
        if engine.frame == 1 and self.vertices[:, 0].mean() < 0:
            Path(file_obj).write_bytes(b"ply\nformat binary_little_endian 1.0\nelem")  # a partial file
            raise OSError(28, "No space left on device")
        return original(self, file_obj, file_type=file_type, **kw)

    monkeypatch.setattr(trimesh.Trimesh, "export", failing_export)
    frames = _frames(3)
    with pytest.raises(OSError, match="No space"):
        export_frame_meshes(engine, frames, out)
    assert engine.calls == 2  # frame 0 done, frame 1 failed while writing, frame 2 never started
    assert _listing(out) == before  # no staging folder, no temporary, no half-written file
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "f1" / "left.ply").read_bytes() == old_f1  # frame 1 kept its previous set, whole
    assert _left_x(out / "f0" / "left.ply") == pytest.approx(1.0, abs=1e-6)  # frame 0: the new set


def test_a_failed_reconstruction_writes_nothing_for_its_frame(tmp_path):
    class Failing(BoxEngine):
        def __call__(self, image, keypoints):
            if int(image[0, 0, 0]) == 1:
                raise RuntimeError("engine failed")
            return super().__call__(image, keypoints)

    with pytest.raises(RuntimeError, match="engine failed"):
        export_frame_meshes(Failing(), _frames(3), tmp_path / "out")
    assert _listing(tmp_path / "out") == ["f0", "f0/left.ply", "f0/manifest.json", "f0/right.ply"]


def test_cancel_empty_frames_and_glb(tmp_path):
    calls = []
    result = export_frame_meshes(BoxEngine(empty_at=1), _frames(4), tmp_path / "out", fmt="glb",
                                 progress=lambda d, t: calls.append(d),
                                 should_cancel=lambda: len(calls) >= 3)  # fmt: skip
    assert result.cancelled and result.empty_frames == [1]
    assert _listing(tmp_path / "out") == ["f0", "f0/hands.glb", "f0/manifest.json",
                                          "f2", "f2/hands.glb", "f2/manifest.json"]  # fmt: skip
    scene = trimesh.load(tmp_path / "out" / "f2" / "hands.glb")
    assert set(scene.geometry) == {"left", "right"}


def test_foreign_or_bad_targets_are_refused_before_any_reconstruction(tmp_path):
    engine = BoxEngine()
    out = tmp_path / "out"
    (out / "f2").mkdir(parents=True)
    (out / "f2" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(OutputPathError, match="frame 2"):
        export_frame_meshes(engine, _frames(3), out)
    assert engine.calls == 0 and (out / "f2" / "holiday.jpg").read_bytes() == b"precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        export_frame_meshes(engine, _frames(1), tmp_path / "file")
    twins = _frames(2)
    twins[1].name = "f0"
    with pytest.raises(InputError, match="share the folder name"):
        export_frame_meshes(engine, twins, tmp_path / "new")
    with pytest.raises(InputError, match="unknown mesh format"):
        export_frame_meshes(engine, _frames(1), tmp_path / "new", fmt="stl")
    assert engine.calls == 0


def test_export_command_writes_every_reviewed_frame_with_the_engine(tmp_path):
    """``main.py export PROJECT --format meshes`` with the shipped engine at 32³; a foreign
    folder in the way is refused before the engine loads."""
    from app.annotation import FrameAnnotation
    from app.project import ProjectData, save_project_file
    from core.io.keypoints import load_keypoints
    from main import main

    sample = Path(__file__).resolve().parents[1] / "resources" / "samples" / "sample_0"
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes((sample / "image.png").read_bytes())
    hands, camera = load_keypoints(sample / "keypoints.json", sample / "image.png")
    frames = {0: FrameAnnotation(detected=hands, reviewed=True), 1: FrameAnnotation(detected=hands)}
    project = tmp_path / "p.im2hands.json"
    save_project_file(project, ProjectData("folder", folder, camera, frames))
    out = tmp_path / "meshes"
    argv = ["export", str(project), "--format", "meshes", "--reviewed", "--resolution", "32",
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert [p.name for p in out.iterdir()] == ["a"]
    assert {"left.ply", "right.ply", "manifest.json"} <= {p.name for p in (out / "a").iterdir()}
    left = trimesh.load(out / "a" / "left.ply", process=False)
    centre = left.vertices.mean(axis=0)
    assert np.linalg.norm(centre - hands.left.mean(axis=0)) < 0.05  # the mesh is around its keypoints
    (out / "b").mkdir()
    (out / "b" / "notes.txt").write_text("mine")
    argv.remove("--reviewed")
    assert main(argv) == 2  # refused: b holds a file we did not write
    assert (out / "b" / "notes.txt").read_text() == "mine"
