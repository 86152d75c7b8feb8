"""A timed training sprint of the shipped recipes, prepared for a GPU machine (issue 13: "a
prepared run of at most 8 minutes of the same recipes, with data generated on its 16 cores").

``python main.py sprint --out DIR [--minutes 8] [--workers N] [--eval-count 30] [--quick]``

Stages, in order, each a subprocess of this program (its own CUDA context, its own failure),
each with a deadline at its cumulative share of the minutes (time an early stage leaves over
goes to the next):

1. **renders** -- ``synth --budget-minutes``: fresh renders on every core (seeds from 400000,
   never the test seed 1234 or the CPU campaign's seeds);
2. **encoder** -- ``configs/encoder.json``'s recipe, warm start from the shipped encoder
   (extracted from ``resources/weights``), larger batches, batch making in worker processes;
3. **kpts** -- ``configs/kpts_image.json``'s recipe from the shipped K, the new encoder swapped
   in (``encoder_tuned_from_init``), encoder maps computed on the fly instead of cached;
4. **init** -- ``configs/init_image_run4.json``'s recipe from the shipped I, likewise;
5. **pack** -- ``DIR/weights``: the new encoder, K and I, R the identity around I, the shipped
   HALO (:mod:`core.training.shipping`);
6. **evaluate** -- the new weights on the first test samples (rows I and K+I, with the image
   ablation, ``--quick``; the shipped set's figures are the model card's);
7. **bench** -- ``bench --parts im2hands`` of the new weights on the machine's device.

``DIR/sprint.json`` records each stage's command, seconds, exit code and output tail, and the
evaluations, so that the figures and the files' provenance come back together. A stage that
fails ends the sprint there (later stages need its output); the record says which.
``--quick`` shrinks every count to a few samples and iterations (a CPU check of the wiring).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from core.errors import InputError
from core.io.atomic import write_text_atomic

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SHIPPED = REPO / "resources" / "weights"
FIRST_SEED = 400_000  # apart from the CPU campaign's 300000-337999 and the test seed 1234
# The evaluation covers the new set only: the shipped set's figures on the full test split are
# in the model card, and a CPU rerun on that split decides whether the new set ships.
STAGE_SHARES = {"renders": 0.22, "encoder": 0.36, "kpts": 0.10, "init": 0.12, "evaluate": 0.12, "bench": 0.08}
START_UP_MINUTES = 0.25  # a training subprocess's imports and model build, before its budget counts
TAIL_CHARS = 1500
HARD_MARGIN_MINUTES = 1.0  # a stage is killed this long after its budget (or the sprint's end)
MIN_STAGE_SECONDS = 30.0  # ... but never before this


@dataclass(frozen=True)
class SprintPlan:
    """The sizes of one sprint. :meth:`full` is sized for one H100/H200 and 16 cores."""

    minutes: float
    workers: int
    max_renders: int
    encoder_batch: int
    encoder_iters: int  # the encoder's cosine length (its budget may stop it earlier)
    kpts_batch: int
    init_batch: int
    network_iters: int  # K's and I's cap (their budgets stop them first on a GPU)
    eval_count: int
    eval_rows: str
    bench_args: tuple[str, ...]
    quick: bool = False

    @classmethod
    def full(cls, minutes: float, workers: int, eval_count: int = 30) -> SprintPlan:
        return cls(minutes, workers, max_renders=20_000, encoder_batch=64, encoder_iters=2500,
                   kpts_batch=64, init_batch=32, network_iters=100_000, eval_count=eval_count,
                   eval_rows="I,K+I", bench_args=("--parts", "im2hands"))  # fmt: skip

    @classmethod
    def tiny(cls, workers: int) -> SprintPlan:
        """A CPU check of the wiring: a few samples and iterations, no budgets that bind."""
        return cls(30.0, workers, max_renders=4, encoder_batch=2, encoder_iters=2, kpts_batch=2,
                   init_batch=2, network_iters=2, eval_count=2, eval_rows="K", bench_args=("--quick",),
                   quick=True)  # fmt: skip


@dataclass
class StageRecord:
    name: str
    command: list[str]
    seconds: float = 0.0
    returncode: int | None = None
    budget_minutes: float | None = None
    output_tail: str = ""
    result: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# Configs: the repository's recipes with the sprint's data, starts and sizes
# ----------------------------------------------------------------------------------------
def _sections(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def encoder_config(plan: SprintPlan, renders: Path, start: Path) -> dict:
    section = _sections("encoder.json")["encoder"]
    section.update(
        data=str(renders), limit=None, init_from=str(start), batch_size=plan.encoder_batch,
        max_iters=plan.encoder_iters, warmup_iters=min(50, plan.encoder_iters), lr=3e-4,
        torch_threads=4, num_workers=0 if plan.quick else plan.workers, checkpoint_every=250,
    )  # fmt: skip
    if plan.quick:
        section.update(log_every=1, checkpoint_every=1, torch_threads=1)
    comment = "GPU sprint: configs/encoder.json's recipe (core/training/sprint.py)"
    return {"_comment": comment, "encoder": section}


def network_config(plan: SprintPlan, network: str, renders: Path, encoder: Path, start: Path) -> dict:
    """K's or I's shipped recipe around the sprint's encoder, from the shipped network."""
    source = {"kpts": "kpts_image.json", "init": "init_image_run4.json"}[network]
    sections = _sections(source)
    common = sections["common"] | {
        "data": {"kind": "synth_folder", "path": str(renders)},
        "encoder_from": str(encoder),
        "encoder_tuned_from_init": True,
        "init_from": str(start),
        "num_workers": 0 if plan.quick else plan.workers,
        "torch_threads": 1 if plan.quick else 4,
        "checkpoint_every": 1 if plan.quick else 500,
        "log_every": 1 if plan.quick else 50,
    }
    own = dict(sections[network])
    own.pop("init_from", None)
    # On a GPU the frozen encoder's maps are cheaper to compute than to cache (2.6 MB a sample).
    own.pop("feature_cache", None)
    own.pop("cache_encoder_maps", None)
    own["max_iters"] = plan.network_iters
    own["batch_size"] = plan.kpts_batch if network == "kpts" else plan.init_batch
    if network == "init" and plan.quick:
        own["points_per_hand"] = 64
    return {"_comment": f"GPU sprint: configs/{source}'s recipe (core/training/sprint.py)", "common": common,
            network: own}  # fmt: skip


# ----------------------------------------------------------------------------------------
# Running stages
# ----------------------------------------------------------------------------------------
def _main_py(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "main.py"), *args]


class Sprint:
    def __init__(self, plan: SprintPlan, out: Path):
        self.plan, self.out = plan, out
        self.records: list[StageRecord] = []
        self.t0 = time.perf_counter()
        shares = list(STAGE_SHARES.values())
        self.deadlines = {
            name: 60.0 * plan.minutes * sum(shares[: i + 1]) for i, name in enumerate(STAGE_SHARES)
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def budget_minutes(self, stage: str) -> float:
        """Minutes left until the stage's deadline (at least half a minute)."""
        return max(0.5, (self.deadlines[stage] - self.elapsed()) / 60.0)

    def run(self, name: str, command: list[str], budget_minutes: float | None = None,
            result: Callable[[], dict] | None = None) -> StageRecord:  # fmt: skip
        """Run one stage; ``result`` reads what it made (into the report, saved at once, so a
        sprint cut off later still reports it)."""
        record = StageRecord(name, command, budget_minutes=budget_minutes)
        self.records.append(record)
        start = time.perf_counter()
        # A hard stop beside the stage's own budget: a stuck stage must not eat the machine,
        # and no stage runs a minute past the sprint's end (the device call has a fixed limit).
        timeout = None
        if budget_minutes is not None and not self.plan.quick:
            sprint_left = 60.0 * (self.plan.minutes + HARD_MARGIN_MINUTES) - self.elapsed()
            timeout = max(MIN_STAGE_SECONDS, min(60.0 * (budget_minutes + HARD_MARGIN_MINUTES), sprint_left))
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        try:
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
            record.returncode, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:  # its captured output comes as bytes
            record.returncode = -9
            output = _text(exc.stdout) + _text(exc.stderr) + "\n(stopped: past the stage's hard time limit)"
        record.seconds = round(time.perf_counter() - start, 1)
        record.output_tail = output[-TAIL_CHARS:]
        if result is not None:
            record.result = result()
        self.save()
        print(f"[{self.elapsed() / 60:5.2f} min] {name}: exit {record.returncode} in {record.seconds:.0f} s",
              flush=True)  # fmt: skip
        return record

    def save(self) -> None:
        report = {
            "plan": asdict(self.plan),
            "minutes_so_far": round(self.elapsed() / 60.0, 2),
            "stages": [asdict(r) for r in self.records],
        }
        write_text_atomic(self.out / "sprint.json", json.dumps(report, indent=1))


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def _write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1))
    return path


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _last_run(folder: Path) -> dict:
    """The newest line of a training run's runs.jsonl (iterations, minutes, data)."""
    log = folder / "runs.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def run_sprint(plan: SprintPlan, out: str | Path) -> dict:
    """Run every stage into ``out`` (which must not hold an earlier sprint); returns the report.
    A stage that fails ends the sprint (the later ones need its files)."""
    out = Path(out)
    if (out / "sprint.json").exists():
        raise InputError(f"{out} already holds a sprint (sprint.json); choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    sprint = Sprint(plan, out)
    for stage in (_render, _train_networks, _pack, _evaluate, _bench):
        if not stage(sprint):
            break
    sprint.save()
    return json.loads((out / "sprint.json").read_text())


def _render(sprint: Sprint) -> bool:
    plan, renders = sprint.plan, sprint.out / "renders"
    command = ["synth", "--out", str(renders), "--count", str(plan.max_renders), "--seed", str(FIRST_SEED),
               "--workers", str(plan.workers)]  # fmt: skip
    budget = None if plan.quick else sprint.budget_minutes("renders")
    if budget is not None:
        command += ["--budget-minutes", f"{budget:.2f}"]
    record = sprint.run("renders", _main_py(*command), budget,
                        result=lambda: {"samples": len(list(renders.glob("*.npz")))})  # fmt: skip
    return record.returncode == 0


def _train_networks(sprint: Sprint) -> bool:
    """The encoder from the shipped one, then K and I around it from the shipped K and I."""
    from core.training.shipping import extract_encoder

    plan, out, renders = sprint.plan, sprint.out, sprint.out / "renders"
    start_encoder = extract_encoder(SHIPPED, out / "shipped_encoder.safetensors")
    encoder = out / "encoder" / "image_encoder.safetensors"
    configs = {
        "encoder": encoder_config(plan, renders, start_encoder),
        "kpts": network_config(plan, "kpts", renders, encoder, SHIPPED / "kpts_ref.safetensors"),
        "init": network_config(plan, "init", renders, encoder, SHIPPED / "ref_occ.safetensors"),
    }
    for network, config in configs.items():
        path = _write_json(out / "configs" / f"{network}.json", config)
        budget = None if plan.quick else max(0.3, sprint.budget_minutes(network) - START_UP_MINUTES)
        command = ["train", network, "--config", str(path), "--out", str(out / network), "--no-progress"]
        if budget is not None:
            command += ["--budget-minutes", f"{budget:.2f}"]
        record = sprint.run(network, _main_py(*command), budget, result=partial(_last_run, out / network))
        if record.returncode != 0:
            return False
    return True


def _pack(sprint: Sprint) -> bool:
    """``DIR/weights``: the new encoder, K and I; R the identity around I; the shipped HALO."""
    out = sprint.out
    command = ["-m", "core.training.shipping", "--out", str(out / "weights"),
               "--init", str(out / "init" / "init_occ.safetensors"),
               "--kpts", str(out / "kpts" / "kpts_ref.safetensors"),
               "--halo", str(SHIPPED / "halo_base.safetensors")]  # fmt: skip
    return sprint.run("pack", [sys.executable, *command]).returncode == 0


def _evaluate(sprint: Sprint) -> bool:
    """The new weights on the first test samples, with the image ablation."""
    plan, json_path = sprint.plan, sprint.out / "evaluate.json"
    command = ["evaluate", "--data", f"synthetic:seed=1234,count={plan.eval_count}", "--quick",
               "--rows", plan.eval_rows, "--shuffle-images", "--weights", str(sprint.out / "weights"),
               "--json", str(json_path)]  # fmt: skip
    budget = None if plan.quick else sprint.budget_minutes("evaluate")
    sprint.run("evaluate", _main_py(*command), budget, result=partial(_read_json, json_path))
    return True  # the bench does not need the evaluation


def _bench(sprint: Sprint) -> bool:
    """The engine's bench on this machine's device (the shipped weights: bench has no --weights)."""
    bench_json = sprint.out / "bench.json"
    command = ["bench", *sprint.plan.bench_args, "--json", str(bench_json)]
    budget = None if sprint.plan.quick else sprint.budget_minutes("bench")
    record = sprint.run("bench", _main_py(*command), budget, result=partial(_read_json, bench_json))
    return record.returncode == 0
