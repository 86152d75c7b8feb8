"""Training loop: exact resume, torchrun, outputs (tiny config, a few synthetic samples)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.synth.samples import SynthConfig, generate_sample, save_sample
from core.training.recipes.config import TrainConfig
from core.training.trainer import CHECKPOINT_NAME, METRICS_CSV, METRICS_PNG, train

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.json"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Three small samples on disk (with meshes, for R's anchors)."""
    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(n_uniform=64, n_surface=64, keep_meshes=True)
    for seed in (0, 1, 2):
        save_sample(generate_sample(seed, cfg), out)
    return out


def tiny(network: str, data_dir: Path, **overrides) -> TrainConfig:
    sections = json.loads(TINY.read_text())
    return TrainConfig.from_sections(
        sections, network, {"data": {"kind": "synth_folder", "path": str(data_dir)}, **overrides}
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.mark.parametrize("network", ["halo", "init"])
def test_resume_continues_identically(network, data_dir, tmp_path):
    """N iterations straight == N/2, stop, resume, N/2 more (bit-exact weights and optimiser)."""
    root = tmp_path / "runs"
    if network == "init":  # I starts from a HALO export
        train(tiny("halo", data_dir, max_iters=1), root / "halo", progress=False)
    cfg = tiny(network, data_dir, max_iters=4, batch_size=2, checkpoint_every=100)
    straight = train(cfg, root / network, progress=False)
    straight_w = _weights(straight.export_path)
    straight_ckpt = torch.load(straight.checkpoint_path, weights_only=True)

    half_dir = root / f"{network}_half"
    first = train(cfg, half_dir, max_iters=2, progress=False)
    assert first.iterations == 2
    half_w = _weights(first.export_path)
    assert any(not torch.equal(half_w[k], straight_w[k]) for k in straight_w), "2 != 4 iterations"
    second = train(cfg, half_dir, resume=True, progress=False)
    assert second.iterations == 4
    _assert_identical(_weights(second.export_path), straight_w)
    resumed_ckpt = torch.load(second.checkpoint_path, weights_only=True)
    for state_a, state_b in zip(
        straight_ckpt["optimizer"]["state"].values(), resumed_ckpt["optimizer"]["state"].values(), strict=True
    ):
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key])
    # The metrics log holds each iteration once, with identical losses.
    rows = (half_dir / METRICS_CSV).read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    straight_rows = (root / network / METRICS_CSV).read_text().strip().splitlines()
    loss_col = rows[0].split(",").index("loss")
    assert [r.split(",")[loss_col] for r in rows[1:]] == [r.split(",")[loss_col] for r in straight_rows[1:]]
    assert (half_dir / METRICS_PNG).stat().st_size > 1000


def test_a_budgeted_run_stops_cleanly_and_the_next_goes_on_identically(data_dir, tmp_path, monkeypatch):
    """--budget-minutes for K/I/R/HALO: the run stops before the step that would overrun,
    saves there, logs itself in runs.jsonl, and a resumed run ends bit-identical to a straight
    one. A run killed after its checkpoint is logged when the next run resumes it."""
    from core.training import trainer
    from core.training.run_log import read_run_log

    assert not trainer._over_budget(9.0, 1.0, 11.0, trainer.DistInfo())  # 9 + 1.5 x 1 <= 11
    assert trainer._over_budget(10.0, 1.0, 11.0, trainer.DistInfo())
    cfg = tiny("halo", data_dir, max_iters=4, batch_size=2, checkpoint_every=100)
    straight = train(cfg, tmp_path / "straight", progress=False)

    checks = []

    def after_two_steps(run_s, last_step_s, budget_s, info, device=None):
        checks.append(budget_s)
        return len(checks) > 2

    monkeypatch.setattr(trainer, "_over_budget", after_two_steps)
    out = tmp_path / "budgeted"
    first = train(cfg, out, budget_minutes=30, progress=False)
    assert (first.iterations, first.stopped_by) == (2, "budget") and checks[0] == 1800.0
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert state["iteration"] == 2
    # The run ended on its checkpoint: it reports the time the checkpoint holds, where the
    # resumed run's clock starts (cumulative totals never go backwards).
    assert first.seconds == state["seconds"]
    monkeypatch.undo()
    second = train(cfg, out, resume=True, progress=False)
    assert (second.iterations, second.stopped_by) == (4, "max_iters")
    _assert_identical(_weights(second.export_path), _weights(straight.export_path))
    runs = read_run_log(out)
    summary = [(r["iterations"], r["stopped_by"], r["samples"]) for r in runs]
    assert summary == [(2, "budget", 3), (4, "max_iters", 3)]
    assert runs[0]["data"]["path"] == str(data_dir) and runs[1]["total_minutes"] >= runs[0]["total_minutes"]
    # Killed at 4 (no line): the next run records it from its checkpoint and export first.
    (out / "runs.jsonl").write_text(json.dumps(runs[0]) + "\n")
    longer = tiny("halo", data_dir, max_iters=5, batch_size=2, checkpoint_every=100)
    train(longer, out, resume=True, progress=False)
    runs = read_run_log(out)
    assert [r["iterations"] for r in runs] == [2, 4, 5]
    assert runs[1]["stopped_by"].startswith("killed") and runs[1]["samples"] == 3


def test_training_lowers_the_loss_on_a_fixed_batch(data_dir, tmp_path):
    """The HALO recipe learns: 30 steps on one sample cut its occupancy MSE."""
    cfg = tiny("halo", data_dir, max_iters=30, batch_size=1, log_every=5, data={
        "kind": "synth_folder", "path": str(data_dir), "limit": 1})  # fmt: skip
    train(cfg, tmp_path / "halo", progress=False)
    rows = (tmp_path / "halo" / METRICS_CSV).read_text().strip().splitlines()
    col = rows[0].split(",").index("loss")
    first, last = float(rows[1].split(",")[col]), float(rows[-1].split(",")[col])
    assert last < 0.7 * first, (first, last)


def test_torchrun_single_process(data_dir, tmp_path):
    """``torchrun --nproc_per_node=1 main.py train ...`` initialises the process group, wraps
    the loss in DistributedDataParallel and writes the same outputs."""
    config = tmp_path / "tiny.json"
    sections = json.loads(TINY.read_text())
    sections["common"]["data"] = {"kind": "synth_folder", "path": str(data_dir)}
    config.write_text(json.dumps(sections))
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "halo"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node=1", "--master_port=29517", str(REPO / "main.py"), "train", "halo",
         "--config", str(config), "--out", str(out), "--max-iters", "2", "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained halo for 2 iterations" in proc.stdout
    assert (out / CHECKPOINT_NAME).is_file() and (out / "halo_base.safetensors").is_file()
    # Same numbers as a plain single-process run (DDP with one process changes nothing).
    plain = train(tiny("halo", data_dir, max_iters=2), tmp_path / "plain", progress=False)
    _assert_identical(_weights(out / "halo_base.safetensors"), _weights(plain.export_path))


def test_cli_rejects_a_missing_config(tmp_path, capsys):
    sys.path.insert(0, str(REPO))
    from main import main

    code = main(["train", "halo", "--config", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "training config not found" in capsys.readouterr().err
