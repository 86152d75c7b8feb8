"""The shared training loop of all recipes: deterministic batches, checkpoints and exact
resume, a progress bar, a metrics CSV and its plot, and multi-process training.

* **Resume** (``resume=True``): ``<out>/checkpoint.pt`` holds the model, optimiser,
  scheduler, iteration and every RNG state (torch, CUDA, numpy, python). Batches are a pure
  function of (seed, epoch, position) and item draws of (seed, index, epoch), and the data
  loader has its own generator, so N/2 + resume + N/2 iterations give bit-identical weights
  to N straight ones.
* **Several processes** (``torchrun --nproc_per_node=G train.py ...``, one or several
  machines): when ``WORLD_SIZE`` is set the process group is initialised (NCCL on GPUs,
  gloo on CPUs), the loss module is wrapped in ``DistributedDataParallel``, each rank reads
  its own share of every epoch through a ``DistributedSampler``, and only rank 0 logs and
  saves. The batch size in the config is per process.
* **Budget** (``budget_minutes``): the run stops before a step that would end past its
  budget, saves its checkpoint and export, and a later ``resume=True`` run goes on from there
  exactly as if it had not stopped (a CPU campaign spread over sessions).
* Outputs in ``<out>``: ``checkpoint.pt`` (resume), ``<network>.safetensors`` (our format:
  the trained network, its config and training metadata), ``metrics.csv``, ``metrics.png``,
  ``runs.jsonl`` (:mod:`core.training.run_log`: one line per run: data, iterations, minutes).
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from core.checkpoints import OUR_SUFFIX
from core.engine.backends import resolve_device
from core.errors import TrainConfigError
from core.io.atomic import atomic_path
from core.models.halo_base import load_torch_checkpoint
from core.training.datasets import dataset_from_spec
from core.training.recipes import make_recipe
from core.training.recipes.base import Recipe
from core.training.recipes.config import TrainConfig
from core.training.run_log import append_run_log, log_unrecorded_run, run_data_from_export, run_record

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
METRICS_PNG = "metrics.png"


# ----------------------------------------------------------------------------------------
# Distributed setup
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistInfo:
    """Initialise the process group when launched by ``torchrun`` (``WORLD_SIZE`` set)."""
    if "WORLD_SIZE" not in os.environ:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)


def training_device(info: DistInfo) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return resolve_device("cpu")


# ----------------------------------------------------------------------------------------
# Deterministic batches
# ----------------------------------------------------------------------------------------
def epoch_batches(
    dataset_len: int, batch_size: int, seed: int, epoch: int, info: DistInfo
) -> list[list[tuple[int, int]]]:
    """This rank's batches of ``epoch``: lists of ``(index, draw=epoch)`` items from a shuffled
    ``DistributedSampler`` (the same permutation on every rank, split between ranks)."""
    sampler = torch.utils.data.DistributedSampler(
        range(dataset_len),
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    n = len(indices) // batch_size
    return [[(i, epoch) for i in indices[k * batch_size : (k + 1) * batch_size]] for k in range(n)]


# ----------------------------------------------------------------------------------------
# RNG states (weights-only serialisable)
# ----------------------------------------------------------------------------------------
def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 -- legacy global state
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },  # fmt: skip
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------
# Metrics log
# ----------------------------------------------------------------------------------------
class MetricsLog:
    """``metrics.csv`` (one row per logged iteration) and its plot ``metrics.png``."""

    def __init__(self, out_dir: Path, resume_from: int):
        self.csv_path = out_dir / METRICS_CSV
        self.png_path = out_dir / METRICS_PNG
        self.rows: list[dict] = []
        if resume_from > 0 and self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= resume_from]
        self._write_all()

    def add(self, row: dict) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._write_all()

    def _write_all(self) -> None:
        if not self.rows:
            self.csv_path.write_text("iteration\n")
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)

    def plot(self) -> Path | None:
        if not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        skip = {"iteration", "epoch", "seconds", "lr"}
        # Columns added mid-campaign (a new loss term) are plotted too, blank before they began.
        keys = [k for k in dict.fromkeys(k for r in self.rows for k in r) if k not in skip]
        its = [int(r["iteration"]) for r in self.rows]
        fig, axes = plt.subplots(
            len(keys), 1, figsize=(7, 2.2 * max(1, len(keys))), sharex=True, squeeze=False
        )
        for ax, key in zip(axes[:, 0], keys, strict=True):
            values = [float(r.get(key) or "nan") for r in self.rows]
            ax.plot(its, values, lw=1)
            ax.set_ylabel(key)
            if key in ("loss", "mse", "pen") and all(v > 0 for v in values if v == v):
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("iteration")
        fig.tight_layout()
        fig.savefig(self.png_path, dpi=90)
        plt.close(fig)
        return self.png_path


# ----------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------
class LossModule(nn.Module):
    """The recipe's loss as a module, so that ``DistributedDataParallel`` sees every forward."""

    def __init__(self, recipe: Recipe, net: nn.Module):
        super().__init__()
        self.recipe, self.net = recipe, net

    def forward(self, batch: dict, device: torch.device):
        return self.recipe.loss(self.net, batch, device)


@dataclass
class TrainResult:
    iterations: int
    seconds: float
    metrics: dict
    export_path: Path
    checkpoint_path: Path
    stopped_by: str = "max_iters"  # or "budget"
    run_seconds: float = 0.0  # this run's share of ``seconds``


def _over_budget(run_s: float, last_step_s: float, budget_s: float, info: DistInfo,
                 device: torch.device | None = None) -> bool:  # fmt: skip
    """Whether the next step would end past the budget; every process takes rank 0's word
    (the flag lives on the training ``device``: NCCL broadcasts CUDA tensors only)."""
    over = run_s + 1.5 * last_step_s > budget_s
    if not info.enabled:
        return over
    stop = torch.tensor([1.0 if over else 0.0], device=device)
    dist.broadcast(stop, src=0)
    return bool(stop.item())


def _save_checkpoint(path: Path, net, opt, sched, iteration: int, cfg: TrainConfig, seconds: float) -> None:
    with atomic_path(path) as tmp:
        _save_training_state(tmp, net, opt, sched, iteration, cfg, seconds)


def _save_training_state(
    tmp: Path, net, opt, sched, iteration: int, cfg: TrainConfig, seconds: float
) -> None:
    torch.save(
        {
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "iteration": iteration,
            "seconds": seconds,
            "rng": rng_state(),
            "config": json.dumps(cfg.flat()),
        },
        tmp,
    )


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    max_iters: int | None = None,
    budget_minutes: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``cfg.network`` into ``out_dir`` (see the module docstring).

    Long: setup, resume, the epoch loop and checkpoints share a dozen locals."""
    run_start = time.perf_counter()  # the budget counts set-up (K's feature cache) too
    out_dir = Path(out_dir)
    total_iters = int(max_iters if max_iters is not None else cfg.max_iters)
    info = setup_distributed(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    device = training_device(info)
    if device.type == "cpu":
        torch.set_num_threads(max(1, cfg.torch_threads))
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    recipe = make_recipe(cfg, out_dir)
    dataset = dataset_from_spec(cfg.data, recipe.item_spec())
    if len(dataset) < cfg.batch_size * info.world_size:
        raise TrainConfigError(
            f"the dataset has {len(dataset)} samples, fewer than one batch ({cfg.batch_size} x "
            f"{info.world_size} processes)"
        )

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
    net = recipe.build().to(device)
    opt = recipe.optimizer(net)
    sched = recipe.scheduler(opt)
    ckpt_path = out_dir / CHECKPOINT_NAME
    start, seconds_before = 0, 0.0
    if resume and ckpt_path.is_file():
        state = load_torch_checkpoint(ckpt_path)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, seconds_before = int(state["iteration"]), float(state.get("seconds", 0.0))
        set_rng_state(state["rng"])
        if info.is_main:
            export = out_dir / f"{recipe.network_name}{OUR_SUFFIX}"
            samples, data = run_data_from_export(export, start, "iteration")
            log_unrecorded_run(out_dir, start, seconds_before, samples, data)
    # the recipe may wrap the dataset with what it derives from the built model (K's feature
    # cache): the main process first, the others then read what it wrote
    if info.is_main:
        dataset = recipe.prepare_dataset(dataset, net, device)
    if info.enabled:
        dist.barrier()
    if not info.is_main:
        dataset = recipe.prepare_dataset(dataset, net, device)
    loss_module: nn.Module = LossModule(recipe, net)
    if info.enabled:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # frozen / unused heads (K's img_final_layer)
        )
    log = MetricsLog(out_dir, start) if info.is_main else None
    export_path = out_dir / f"{recipe.network_name}{OUR_SUFFIX}"

    per_epoch = len(dataset) // (cfg.batch_size * info.world_size)
    it, t0 = start, time.perf_counter()
    bar = None
    if progress and info.is_main:
        from tqdm import tqdm

        bar = tqdm(total=total_iters, initial=start, desc=f"train {cfg.network}", dynamic_ncols=True)
    window: list[dict] = []
    last_metrics: dict = {}

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - t0

    saved_at = start if resume and ckpt_path.is_file() else None
    saved_seconds: float | None = None

    def save() -> None:
        nonlocal saved_at, saved_seconds
        saved_at, saved_seconds = it, elapsed()
        if not info.is_main:
            return
        _save_checkpoint(ckpt_path, net, opt, sched, it, cfg, saved_seconds)
        metadata = {"iteration": it, "train_seconds": round(saved_seconds, 1), "train_config": cfg.flat(),
                    "samples": len(dataset), "data": cfg.data}  # fmt: skip
        recipe.export(net, export_path, metadata)
        log.plot()

    budget_s = None if budget_minutes is None else 60.0 * budget_minutes
    stopped_by, last_step = "max_iters", 0.0
    while it < total_iters and stopped_by == "max_iters":
        epoch, position = divmod(it, per_epoch)
        batches = epoch_batches(len(dataset), cfg.batch_size, cfg.seed, epoch, info)[position:]
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),  # leaves the global RNG alone
        )
        for batch in loader:
            run_s = time.perf_counter() - run_start
            if budget_s is not None and _over_budget(run_s, last_step, budget_s, info, device):
                stopped_by = "budget"
                break
            step_start = time.perf_counter()
            loss_module.train()
            loss, metrics = loss_module(batch, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            it += 1
            last_step = time.perf_counter() - step_start
            window.append(metrics)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(metrics.items())[:3]})
            if it % cfg.log_every == 0 or it == total_iters:
                last_metrics = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
                window = []
                if log is not None:
                    log.add({"iteration": it, "epoch": epoch, "lr": sched.get_last_lr()[0],
                             "seconds": round(elapsed(), 2), **last_metrics})  # fmt: skip
            if it % cfg.checkpoint_every == 0 or it == total_iters:
                save()
            if it >= total_iters:
                break
    if bar is not None:
        bar.close()
    if stopped_by == "budget" and saved_at != it:
        save()  # the budget's stop point, unless a checkpoint holds it already
    if start >= total_iters and info.is_main and not export_path.is_file():
        save()
    # A run that ends on a checkpoint reports the time that checkpoint holds, which is where a
    # resumed run's clock starts: the runs' cumulative totals then never go backwards.
    total = saved_seconds if saved_at == it and saved_seconds is not None else elapsed()
    if info.is_main and it > start:
        record = run_record(it, total - seconds_before, total, stopped_by, len(dataset), cfg.data)
        append_run_log(out_dir, record)
    if info.enabled:
        dist.barrier()
    return TrainResult(it, total, last_metrics, export_path, ckpt_path, stopped_by, total - seconds_before)
