"""The campaign log of a training folder: ``runs.jsonl``, one line per run, saying which data,
iterations and minutes produced the weights in that folder. Shared by the K/I/R/HALO loop
(:mod:`core.training.trainer`) and the encoder's (:mod:`core.training.encoder_training`).

A run that ends normally (its iteration limit or its time budget) appends its own line. A run
killed before its end (a session that ended first) leaves checkpoints but no line; the next
run that resumes from its checkpoint records it first (:func:`log_unrecorded_run`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from core.checkpoints import read_checkpoint_info
from core.errors import CheckpointError

RUNS_LOG = "runs.jsonl"
KILLED = "killed (its last checkpoint, recorded when resumed)"


def run_record(iteration: int, run_s: float, total_s: float, stopped_by: str, samples: int | None,
               data: str | dict | None) -> dict:  # fmt: skip
    """One line of ``runs.jsonl`` (``data``: a folder, or a training config's data section)."""
    return {
        "iterations": iteration,
        "run_minutes": round(run_s / 60, 2),
        "total_minutes": round(total_s / 60, 2),
        "stopped_by": stopped_by,
        "samples": samples,
        "data": data,
    }


def append_run_log(out: Path, record: dict) -> None:
    with open(Path(out) / RUNS_LOG, "a") as f:
        f.write(json.dumps(record | {"ended": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")


def read_run_log(out: Path) -> list[dict]:
    path = Path(out) / RUNS_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log_unrecorded_run(
    out: Path, iteration: int, seconds: float, samples: int | None, data: str | dict | None
) -> None:
    """Record the run that wrote the checkpoint at ``iteration`` (``seconds`` of training in
    all) if the log does not hold it yet. ``samples`` and ``data``: what that run read, from
    its own export where known (the resuming run may read other data)."""
    runs = read_run_log(out)
    logged = runs[-1] if runs else {"iterations": 0, "total_minutes": 0.0}
    if iteration <= int(logged.get("iterations", 0)):
        return
    run_seconds = seconds - 60 * float(logged.get("total_minutes", 0.0))
    append_run_log(out, run_record(iteration, run_seconds, seconds, KILLED, samples, data))


def run_data_from_export(export_path: Path, iteration: int, iteration_key: str) -> tuple[int | None, object]:
    """Samples and data read by the run that wrote ``export_path`` at ``iteration`` (its
    metadata names the iteration ``iteration_key``); ``(None, None)`` when the export is
    missing, unreadable or of another iteration."""
    try:
        meta = read_checkpoint_info(export_path).metadata
    except CheckpointError:  # missing or foreign: only the detail is lost
        return None, None
    if meta.get(iteration_key) != iteration:
        return None, None
    return meta.get("samples"), meta.get("data")
