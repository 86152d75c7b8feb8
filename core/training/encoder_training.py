"""Training of the image encoder on synthetic renders: ImageNet start, 2D supervision,
strong augmentation, budgeted and exactly resumable runs (a CPU campaign, run after run).

``python main.py train encoder --config configs/encoder.json --out DIR [--resume]
[--budget-minutes M] [--max-iters N]``

* **Start**: the pretrained trunk's ImageNet weights from its registry package
  (:mod:`core.models.pretrained_trunks`), xavier heads; or ``init_from`` an earlier encoder.
* **Loss** (IntagHand's three 2D terms): heatmap MSE (x ``heatmap_weight``), hand-mask BCE,
  and L1 of the dense canonical coordinates on each hand's own pixels.
* **Frozen**: the stem and the first ``frozen_blocks`` trunk stages keep their ImageNet weights
  and BatchNorm statistics (they compute generic edges at 128 and 64 px, where backward passes
  cost most). The decoded renders and their dense targets are cached on disk (``cache_dir``)
  the first time they are read, since they never change; augmentation is redrawn every epoch.
* **Resume**: ``checkpoint.pt`` holds weights, optimiser, iteration, seconds and RNG states.
  Batches are a pure function of (seed, epoch) and each item's augmentation of (seed, index,
  epoch), so N straight iterations and N/2 + resume + N/2 give bit-identical weights.
* **Budget**: the run stops cleanly (checkpoint + exported weights) before a step would
  cross ``--budget-minutes``.
* **Outputs**: ``checkpoint.pt``, ``image_encoder.safetensors`` (our format; the header holds
  the encoder config and which data, iterations and minutes produced it), ``metrics.csv``,
  ``runs.jsonl`` (one line per run of the campaign).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.checkpoints import load_checkpoint, save_checkpoint
from core.errors import InputError
from core.io.atomic import atomic_path
from core.models.config import EncoderConfig
from core.models.heatmap_readout import soft_argmax
from core.models.image_encoder import ImageEncoding, PretrainedTrunkEncoder, normalize_image
from core.models.registry import TRAINED_ENCODER_NETWORK as ENCODER_NETWORK
from core.synth.samples import load_sample
from core.training.encoder_targets import (
    AugmentConfig,
    EncoderSample,
    EncoderTargets,
    augment,
    encoder_sample,
    map_targets,
)
from core.training.run_log import append_run_log, log_unrecorded_run, run_data_from_export, run_record
from core.training.run_schedule import RunSchedule
from core.training.trainer import DistInfo, MetricsLog, epoch_batches, rng_state, set_rng_state

EXPORT_NAME = "image_encoder.safetensors"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True, kw_only=True)
class EncoderTrainConfig(RunSchedule):
    """The encoder campaign's settings; the shared run settings are :class:`RunSchedule`'s
    (``init_from``: an earlier image_encoder.safetensors instead of ImageNet)."""

    data: str  # a synth folder (python main.py synth --out DIR); relative paths: to the config
    limit: int | None = None  # first N samples (sorted by name)
    cache_dir: str = "encoder_cache"  # relative to the run folder
    encoder: EncoderConfig = field(default_factory=EncoderConfig.pretrained_lite)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    frozen_blocks: int = 2  # trunk stages (after the stem) kept at their ImageNet weights
    lr: float = 1e-3
    trunk_lr_scale: float = 0.3  # the pretrained trunk moves slower than the fresh heads
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    max_iters: int = 6000  # length of the cosine schedule (the campaign's total)
    heatmap_sigma: float = 1.5  # map cells (6 crop pixels)
    heatmap_weight: float = 1000.0
    # Background cells outnumber a joint's ~20 peak cells 200:1, so a plain MSE learns "all
    # zero" first (run 1-2: 5000 iterations only took the loss from 0.0017, the all-zero value,
    # to 0.0013). Peak cells weigh (1 + heatmap_fg_weight * target); 0 = plain MSE.
    heatmap_fg_weight: float = 0.0
    # L1 (map cells) between the soft-argmax of each map and its joint, for joints inside the
    # crop: a gradient towards the joint from every cell. 0 = off (runs 1-2).
    coord_weight: float = 0.0
    coord_beta: float = 20.0  # softmax sharpness of the soft-argmax (maps peak at 1)
    mask_weight: float = 1.0
    dense_weight: float = 1.0
    checkpoint_every: int = 50
    # Processes that make batches ahead of the step (0: in the training process). Batches are
    # a pure function of the iteration, so the weights do not depend on it; on a GPU the
    # augmentation, not the step, is the bottleneck without them.
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.encoder.is_resnet:
            raise InputError("encoder training needs a pretrained trunk (e.g. backbone efficientnet_lite0)")
        super().__post_init__()
        if self.heatmap_sigma <= 0 or self.coord_beta <= 0:
            raise InputError("encoder training: heatmap_sigma and coord_beta must be positive")
        if min(self.heatmap_fg_weight, self.coord_weight) < 0:
            raise InputError("encoder training: heatmap_fg_weight and coord_weight must be >= 0")
        if self.num_workers < 0:
            raise InputError("encoder training: num_workers must be >= 0")

    @classmethod
    def from_dict(cls, data: dict, base_dir: Path | None = None) -> EncoderTrainConfig:
        """From a JSON section; unknown keys are an error (a typo must not be ignored)."""
        nested = {"encoder": EncoderConfig, "augment": AugmentConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"_comment"})
        if unknown:
            raise InputError(f"unknown encoder training option(s): {', '.join(unknown)}")
        kwargs = {k: v for k, v in data.items() if k in known}
        for key, sub in nested.items():
            if key in kwargs:
                sub_known = {f.name for f in dataclasses.fields(sub)}
                bad = sorted(set(kwargs[key]) - sub_known)
                if bad:
                    raise InputError(f"unknown {key} option(s): {', '.join(bad)}")
                values = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs[key].items()}
                kwargs[key] = dataclasses.replace(cls.__dataclass_fields__[key].default_factory(), **values)
        if "data" not in kwargs:
            raise InputError("encoder training: 'data' (a synth folder) is required")
        if base_dir is not None:
            for key in ("data", "init_from"):
                if kwargs.get(key) and not Path(kwargs[key]).is_absolute():
                    kwargs[key] = str(base_dir / kwargs[key])
        return cls(**kwargs)


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------
def sample_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"encoder training data folder not found: {folder}")
    files = sorted(folder.glob("*.npz"))
    if limit is not None:
        if len(files) < limit:
            raise InputError(f"{folder} holds {len(files)} samples, the config asks for {limit}")
        files = files[:limit]
    if not files:
        raise InputError(f"{folder} holds no samples (*.npz from python main.py synth)")
    return files


def cached_item(npz_path: Path, cache_dir: Path | None) -> EncoderSample:
    """The sample's image and 2D targets; the dense map (a back-projection per pixel) is
    computed once and kept in ``cache_dir``."""
    cache = cache_dir / npz_path.name if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return EncoderSample(z["image"], z["joints_uv"], z["labels"], z["dense"].astype(np.float32))
    item = encoder_sample(load_sample(npz_path))
    if cache is None:
        return item
    dense = item.dense.astype(np.float16)
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.savez(f, image=item.image, joints_uv=item.joints_uv, labels=item.labels, dense=dense)
    # What a later read gets: the first read must not differ from it (exact resumes).
    return EncoderSample(item.image, item.joints_uv, item.labels, dense.astype(np.float32))


def targets_to_batch(images: list[np.ndarray], targets: list[EncoderTargets]) -> dict[str, torch.Tensor]:
    return {
        "image": normalize_image(torch.from_numpy(np.stack(images))).contiguous(
            memory_format=torch.channels_last
        ),
        "heatmaps": torch.from_numpy(np.stack([t.heatmaps for t in targets])),
        "masks": torch.from_numpy(np.stack([t.masks for t in targets])),
        "dense": torch.from_numpy(np.stack([t.dense for t in targets])),
        "joints_xy": torch.from_numpy(np.stack([t.joints_xy for t in targets])),
        "joint_inside": torch.from_numpy(np.stack([t.joint_inside for t in targets])),
    }


# ----------------------------------------------------------------------------------------
# Model and loss
# ----------------------------------------------------------------------------------------
def frozen_modules(encoder: PretrainedTrunkEncoder, frozen_blocks: int) -> list[torch.nn.Module]:
    trunk = encoder.trunk
    return [trunk.conv_stem, trunk.bn1, *list(trunk.blocks)[:frozen_blocks]]


def set_train_mode(encoder: PretrainedTrunkEncoder, frozen_blocks: int) -> None:
    """Train mode, except the frozen stages, whose BatchNorm keeps its ImageNet statistics."""
    encoder.train()
    for module in frozen_modules(encoder, frozen_blocks):
        module.eval()


def build_encoder(cfg: EncoderTrainConfig) -> PretrainedTrunkEncoder:
    torch.manual_seed(cfg.seed)
    encoder = PretrainedTrunkEncoder(cfg.encoder)
    if cfg.init_from:
        load_checkpoint(encoder, cfg.init_from, ENCODER_NETWORK, config=cfg.encoder)
    else:
        encoder.load_imagenet_weights()
        # Heatmaps start near zero (their targets are zero almost everywhere): xavier output
        # layers on top of large trunk features start with a heatmap MSE near 40.
        for head in (encoder.hms_decoder, encoder.dp_decoder):
            torch.nn.init.normal_(head.final_layer.weight, std=1e-3)
    for module in frozen_modules(encoder, cfg.frozen_blocks):
        module.requires_grad_(False)
    # Channels-last: PyTorch's CPU backward of the 5x5 depthwise convolutions is ~30x faster
    # in this layout (0.3 s against 9-15 s for one 240-channel layer at batch 8, measured).
    return encoder.to(memory_format=torch.channels_last)


def encoder_loss(out: ImageEncoding, batch: dict, cfg: EncoderTrainConfig) -> dict[str, torch.Tensor]:
    target = batch["heatmaps"]
    heat = ((out.hms - target) ** 2 * (1 + cfg.heatmap_fg_weight * target)).mean()
    mask = F.binary_cross_entropy_with_logits(out.mask, batch["masks"])
    # Dense coordinates count on each hand's own pixels (mask cover as the weight).
    weight = batch["masks"].repeat_interleave(3, dim=1)
    dense = ((out.dp - batch["dense"]).abs() * weight).sum() / weight.sum().clamp_min(1.0)
    total = cfg.heatmap_weight * heat + cfg.mask_weight * mask + cfg.dense_weight * dense
    losses = {"heatmap": heat, "mask": mask, "dense": dense}
    if cfg.coord_weight > 0:
        inside = batch["joint_inside"].float()
        error = (soft_argmax(out.hms, cfg.coord_beta) - batch["joints_xy"]).abs().sum(-1)
        losses["coord"] = (error * inside).sum() / inside.sum().clamp_min(1.0)
        total = total + cfg.coord_weight * losses["coord"]
    return {"loss": total, **losses}


def learning_rate_factor(iteration: int, cfg: EncoderTrainConfig) -> float:
    """Linear warm-up, then a cosine decay to 5 % at ``max_iters``."""
    if iteration < cfg.warmup_iters:
        return (iteration + 1) / cfg.warmup_iters
    progress = min(1.0, (iteration - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(encoder: PretrainedTrunkEncoder, cfg: EncoderTrainConfig) -> torch.optim.Optimizer:
    trunk = [p for p in encoder.trunk.parameters() if p.requires_grad]
    heads = [p for n, p in encoder.named_parameters() if p.requires_grad and not n.startswith("trunk.")]
    return torch.optim.AdamW(
        [{"params": trunk, "lr": cfg.lr * cfg.trunk_lr_scale}, {"params": heads, "lr": cfg.lr}],
        weight_decay=cfg.weight_decay,
    )


# ----------------------------------------------------------------------------------------
# The campaign loop
# ----------------------------------------------------------------------------------------
@dataclass
class EncoderRunResult:
    iterations: int
    seconds_total: float
    seconds_this_run: float
    stopped_by: str  # "max_iters" or "budget"
    export_path: Path
    metrics: dict[str, float]


class _Batches:
    """Deterministic augmented batches: item draws are a function of (seed, index, epoch)."""

    def __init__(self, files: list[Path], cfg: EncoderTrainConfig, cache_dir: Path):
        self.files, self.cfg, self.cache_dir = files, cfg, cache_dir
        self.per_epoch = len(files) // cfg.batch_size
        if self.per_epoch < 1:
            raise InputError(f"{len(files)} samples are fewer than one batch of {cfg.batch_size}")

    def item(self, index: int) -> EncoderSample:
        # Read from the disk cache every time (~1 MB a sample decoded: thousands of renders
        # would not fit in memory beside the tests; the OS page cache keeps the files warm).
        return cached_item(self.files[index], self.cache_dir)

    def batch(self, iteration: int) -> dict[str, torch.Tensor]:
        epoch, position = divmod(iteration, self.per_epoch)
        chosen = epoch_batches(len(self.files), self.cfg.batch_size, self.cfg.seed, epoch, DistInfo())[
            position
        ]
        images, targets = [], []
        for index, draw in chosen:
            rng = np.random.default_rng([self.cfg.seed, index, draw])
            item = augment(self.item(index), rng, self.cfg.augment)
            images.append(item.image)
            targets.append(map_targets(item, self.cfg.heatmap_sigma))
        return targets_to_batch(images, targets)


class _IterationBatches(torch.utils.data.Dataset):
    """Batches ``start`` .. ``stop - 1`` as a dataset, so that worker processes can make
    them ahead of the step (each is a pure function of its iteration)."""

    def __init__(self, batches: _Batches, start: int, stop: int):
        self.batches, self.start, self.stop = batches, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return self.batches.batch(self.start + k)


def _batch_stream(batches: _Batches, start: int, stop: int, workers: int, pin: bool):
    """The batches of iterations ``start`` .. ``stop - 1`` in order."""
    if workers == 0:
        return (batches.batch(i) for i in range(start, stop))
    loader = torch.utils.data.DataLoader(
        _IterationBatches(batches, start, stop), batch_size=None, shuffle=False,
        num_workers=workers, pin_memory=pin, prefetch_factor=4,
    )  # fmt: skip
    return iter(loader)


def encoder_device() -> torch.device:
    """CUDA when present (one device: the encoder campaign does not run distributed)."""
    if torch.cuda.is_available():
        # TF32 matrix products and convolutions: ~3x the float32 rate, ample for 2D heatmaps.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda")
    return torch.device("cpu")


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _save_state(path: Path, encoder, opt, iteration: int, seconds: float) -> None:
    state = {
        "model": encoder.state_dict(),
        "optimizer": opt.state_dict(),
        "iteration": iteration,
        "seconds": seconds,
        "rng": rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _export(
    out: Path, encoder, cfg: EncoderTrainConfig, files: list[Path], iteration: int, seconds: float
) -> Path:
    metadata = {
        "trained_by": "core.training.encoder_training",
        "data": str(Path(cfg.data).resolve()),
        "samples": len(files),
        "first_sample": files[0].stem,
        "last_sample": files[-1].stem,
        "iterations": iteration,
        "minutes": round(seconds / 60, 2),
        "batch_size": cfg.batch_size,
        "start": cfg.init_from or "ImageNet (" + cfg.encoder.backbone + ")",
    }
    return save_checkpoint(out / EXPORT_NAME, encoder, ENCODER_NETWORK, config=cfg.encoder, metadata=metadata)


def _restore(ckpt: Path, encoder, opt, resume: bool) -> tuple[int, float]:
    """(iteration, seconds so far) from ``checkpoint.pt`` when resuming, else (0, 0)."""
    if not ckpt.is_file():
        return 0, 0.0
    if not resume:
        raise InputError(f"{ckpt.parent} already holds a training run; pass --resume to go on with it")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    encoder.load_state_dict(state["model"])  # copies into the encoder's own device
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return int(state["iteration"]), float(state["seconds"])


def _train_step(encoder, opt, batch: dict, iteration: int, cfg: EncoderTrainConfig) -> dict[str, float]:
    set_train_mode(encoder, cfg.frozen_blocks)
    factor = learning_rate_factor(iteration, cfg)
    for group, base in zip(opt.param_groups, (cfg.lr * cfg.trunk_lr_scale, cfg.lr), strict=True):
        group["lr"] = base * factor
    losses = encoder_loss(encoder(batch["image"]), batch, cfg)
    opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    opt.step()
    return {k: float(v.detach()) for k, v in losses.items()} | {"lr": cfg.lr * factor}


def train_encoder(
    cfg: EncoderTrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    budget_minutes: float | None = None,
    max_iters: int | None = None,
    progress: bool = True,
) -> EncoderRunResult:
    """Train (or go on training) the encoder into ``out``; see the module docstring. Every
    checkpoint also exports the weights, so a run killed at a session's end leaves both."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.torch_threads)
    files = sample_files(cfg.data, cfg.limit)
    batches = _Batches(files, cfg, out / cfg.cache_dir)
    device = encoder_device()
    encoder = build_encoder(cfg).to(device)
    opt = make_optimizer(encoder, cfg)
    iteration, seconds_before = _restore(out / CHECKPOINT_NAME, encoder, opt, resume)
    samples, data = run_data_from_export(out / EXPORT_NAME, iteration, "iterations")
    log_unrecorded_run(out, iteration, seconds_before, samples, data)
    stop_at = min(max_iters or cfg.max_iters, cfg.max_iters)
    log = MetricsLog(out, iteration)
    t0, last_step, stopped_by, metrics = time.perf_counter(), 0.0, "max_iters", {}
    budget_s = math.inf if budget_minutes is None else budget_minutes * 60.0

    def seconds() -> float:
        return seconds_before + time.perf_counter() - t0

    stream = _batch_stream(batches, iteration, stop_at, cfg.num_workers, pin=device.type == "cuda")
    while iteration < stop_at:
        if time.perf_counter() - t0 + 1.5 * last_step > budget_s:
            stopped_by = "budget"
            break
        step_start = time.perf_counter()
        metrics = _train_step(encoder, opt, _to_device(next(stream), device), iteration, cfg)
        iteration += 1
        last_step = time.perf_counter() - step_start
        if iteration % cfg.log_every == 0 or iteration == stop_at:
            log.add({"iteration": iteration, "seconds": round(seconds(), 1), **metrics})
            if progress:
                shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
                print(f"it {iteration}/{stop_at} {last_step:.2f} s/it {shown}", flush=True)
        if iteration % cfg.checkpoint_every == 0:
            _save_state(out / CHECKPOINT_NAME, encoder, opt, iteration, seconds())
            _export(out, encoder, cfg, files, iteration, seconds())
    total = seconds()
    _save_state(out / CHECKPOINT_NAME, encoder, opt, iteration, total)
    export = _export(out, encoder, cfg, files, iteration, total)
    record = run_record(iteration, total - seconds_before, total, stopped_by, len(files), str(cfg.data))
    append_run_log(out, record)
    log.plot()
    return EncoderRunResult(iteration, total, total - seconds_before, stopped_by, export, metrics)
