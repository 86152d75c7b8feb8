"""Cached frozen inputs of network R's decoder tail (optional; a CPU shortcut for training R).

When R trains only its decoder's MLP tail (``trans_dec.init_enc``, ``blocks``, ``fc_c``,
``fc_out``; see :data:`TAIL_PREFIXES`), everything before that tail is a constant of each
training sample: the image encoders, network I, the anchors, their encoding and the context
fusion, and the decoder's cross-attention to the anchors. This module runs those parts once
per sample **the way the engine runs them at inference** -- anchors are 512 points sampled on
network I's iso-surface (``Engine`` anchor extraction at ``anchor_resolution``), not on the
ground truth -- and stores, per sample, for the decoder of hand ``d`` at the query points of
hand ``s`` (``d == s``: the data term; ``d != s``: the penetration term):

* ``attended`` (200): the cross-attention output of the decoder of ``d``;
* ``pixel`` (32): R's pixel-aligned image feature at the point;
* ``occ_init`` (1): network I's occupancy of hand ``d`` at the point (as the engine evaluates I);

plus the ground-truth occupancy of hand ``s`` at its own points. A training step then only
runs the tail (:func:`tail_logits`) on these values: milliseconds instead of seconds.

The folder holds float16 memory maps (``.npy``) and a metadata file, written last, with the
fingerprint of every tensor the cached values depend on; a mismatch is an error, never a silent
reuse. Samples are filled in order and a build resumes where an earlier one stopped; a cache
with ``filled`` samples serves any dataset of at most that many samples (its first ones).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.hand.joints import HAND_SIDES
from core.models.ref_occ import RefOccNet
from core.training.cache_files import read_meta, state_fingerprint, write_meta
from core.training.datasets import DatasetError, SynthFolderDataset, _Addressed, contact_subsample
from core.training.input_noise import keypoint_hand_inputs, move_canonical_points

META_FILE = "ref_cache.json"
# The trainable part of R when it trains from this cache: the decoder's MLP tail.
TAIL_PREFIXES = ("trans_dec.init_enc.", "trans_dec.blocks.", "trans_dec.fc_c.", "trans_dec.fc_out.")
ARRAYS = {  # name -> (dtype, per-sample shape given M points per hand, A attention width, C pixel width)
    "attended": (np.float16, lambda m, a, c: (2, 2, m, a)),
    "pixel": (np.float16, lambda m, a, c: (2, 2, m, c)),
    "occ_init": (np.float16, lambda m, a, c: (2, 2, m)),
    "occ_gt": (np.uint8, lambda m, a, c: (2, m)),
    "valid": (np.uint8, lambda m, a, c: ()),
}


@dataclass(frozen=True)
class RefCacheSpec:
    """What a cache holds: ``points_per_hand`` query points per hand and sample (of the stored
    ones, ``contact_fraction`` of them from the contact set), anchors from I's surface at
    ``anchor_resolutions[index % len]`` (the engine's ``anchor_resolution``; 32 in the quick
    evaluation, 64 by default), drawn with ``seed``."""

    points_per_hand: int = 1024
    contact_fraction: float = 0.25
    anchor_resolutions: tuple[int, ...] = (32, 64)
    seed: int = 0
    # share of the samples whose I and R inputs come from the sample's stored noisy keypoints
    # instead of the ground truth (ours): R then learns to correct a misplaced I, which is what
    # it gets after K. The query points stay the stored ones -- physical points with their
    # ground-truth labels -- moved into the noisy hands' canonical frames.
    noisy_share: float = 0.0

    def to_json(self) -> dict:
        out = {"points_per_hand": self.points_per_hand, "contact_fraction": self.contact_fraction,
               "anchor_resolutions": list(self.anchor_resolutions), "seed": self.seed}  # fmt: skip
        if self.noisy_share > 0:  # caches written before the option keep their spec
            out["noisy_share"] = self.noisy_share
        return out


def frozen_fingerprint(net: RefOccNet) -> str:
    """SHA-1 of every tensor of R (I inside) that is not part of the trainable tail."""
    return state_fingerprint(net, lambda name: not name.startswith(TAIL_PREFIXES))


# ----------------------------------------------------------------------------------------
# The tail (pure functions of tensors and the decoder's weights)
# ----------------------------------------------------------------------------------------
def tail_logits(
    net: RefOccNet, attended: torch.Tensor, pixel: torch.Tensor, occ_init: torch.Tensor
) -> torch.Tensor:
    """R's logits (..., M) from cached ``attended`` (..., M, 200), ``pixel`` (..., M, 32) and
    I's occupancy (..., M): the decoder after its cross-attention, as
    :meth:`RefOccNet.query` computes it."""
    dec = net.trans_dec
    lead = attended.shape[:-1]
    att = attended.reshape(1, -1, attended.shape[-1])
    occ = occ_init.reshape(1, -1, 1).expand(-1, -1, net.cfg.init_occ_repeat)
    feats = torch.cat([pixel.reshape(1, -1, pixel.shape[-1]), occ], dim=-1)
    fc_c_weight = torch.cat([m.weight for m in dec.fc_c], dim=0)
    fc_c_bias = torch.cat([m.bias for m in dec.fc_c], dim=0)
    return dec._mlp_tail(att, feats, fc_c_weight, fc_c_bias).reshape(lead)


@torch.no_grad()
def normalise_tail_init(
    net: RefOccNet, attended: torch.Tensor, pixel: torch.Tensor, occ_init: torch.Tensor
) -> None:
    """Data-dependent start of the tail's free hidden channels (ours): rows 1.. of ``init_enc``
    and of every ``fc_c`` are shifted and scaled so that those channels have zero mean and unit
    spread on the given cached values (otherwise Adam's first steps on ``fc_out`` and on the
    blocks' zero-initialised ``fc_1``, each by the full learning rate, are multiplied by
    channel values in the tens and swing the logits). Channel 0 -- the identity path of
    :func:`core.training.recipes.ref.identity_init_ref_decoder` -- is untouched, so the tail's
    output does not change (``fc_out`` reads channel 0 only at the start)."""
    dec = net.trans_dec
    att = attended.reshape(-1, attended.shape[-1]).float()
    occ = occ_init.reshape(-1, 1).float().expand(-1, net.cfg.init_occ_repeat)
    x = torch.cat([att, pixel.reshape(-1, pixel.shape[-1]).float(), occ], dim=-1)
    for layer, inputs in [(dec.init_enc, x)] + [(fc, att) for fc in dec.fc_c]:
        h = layer(inputs)
        mean, std = h.mean(dim=0), h.std(dim=0).clamp_min(1e-6)
        layer.weight[1:] /= std[1:, None]
        layer.bias[1:] = (layer.bias[1:] - mean[1:]) / std[1:]


# ----------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------
def _decoder_inputs(
    net: RefOccNet, backend, inputs, d: str, s: str, points_s: np.ndarray
) -> dict[str, np.ndarray]:
    """Cached values of the decoder of hand ``d`` at canonical points of hand ``s`` (M, 3);
    ``inputs`` from :meth:`core.engine.Engine.refinement_inputs`."""
    frames, feats, context = inputs.frames, inputs.features, inputs.anchor_context
    dev = backend.device
    hand_d = frames[d].network_inputs(dev)
    p = torch.as_tensor(points_s, dtype=torch.float32, device=dev)[None]
    if d != s:  # the other hand's points in this hand's canonical frame, through the camera
        hand_s = frames[s].network_inputs(dev)
        p = move_canonical_points(p, hand_s, s, hand_d, d, net.cfg.global_scale)
    occ = backend.init_occupancy(feats, frames[d], p[0].cpu().numpy(), False)  # as the engine runs I
    geometry = net.query_geometry(feats.ref, context, d, hand_d, p)
    attended = net.trans_dec.ct1(geometry[..., :3], context.decoder_encoding(d))
    return {"attended": attended[0].cpu().numpy(), "pixel": geometry[0, :, 3:].cpu().numpy(), "occ_init": occ}


def into_input_frames(global_scale: float, truth, frames, side: str, points: np.ndarray) -> np.ndarray:
    """Canonical points (M, 3) of hand ``side`` under the ground-truth keypoints ``truth`` ->
    the same physical points in the canonical frame of the engine's ``frames`` (made from
    other keypoints)."""
    hand_gt = keypoint_hand_inputs(truth)[side]
    hand_in = frames[side].network_inputs("cpu")
    p = torch.as_tensor(points, dtype=torch.float32)[None]
    return move_canonical_points(p, hand_gt, side, hand_in, side, global_scale)[0].numpy().astype(np.float32)


def sample_cache_entry(
    net: RefOccNet, engine, sample, spec: RefCacheSpec, index: int
) -> dict[str, np.ndarray] | None:
    """The cached values of one synthetic sample (``SynthSample``), or None when network I
    finds no surface for a hand (the engine then skips R too)."""
    from core.engine.settings import ReconstructionSettings

    rng = np.random.default_rng([spec.seed, index])
    points, occ_gt = {}, {}
    for s in HAND_SIDES:
        o = sample.occupancy[s]
        points[s], occ_gt[s] = contact_subsample(
            o.points_canon_norm,
            o.occupancy,
            o.occupancy_raw,
            spec.points_per_hand,
            spec.contact_fraction,
            rng,
        )
    noisy = spec.noisy_share > 0 and bool(rng.random() < spec.noisy_share)
    res = spec.anchor_resolutions[index % len(spec.anchor_resolutions)]
    settings = ReconstructionSettings(resolution=res, anchor_resolution=res, device=str(engine.device))
    keypoints = sample.noisy_keypoints if noisy else sample.keypoints
    inputs = engine.refinement_inputs(sample.image, sample.camera, keypoints, settings)
    if inputs.anchor_context is None:
        return None
    if noisy:
        scale, truth = net.cfg.global_scale, sample.keypoints
        points = {s: into_input_frames(scale, truth, inputs.frames, s, points[s]) for s in HAND_SIDES}
    with torch.inference_mode():
        per = {
            (d, s): _decoder_inputs(net, engine.backend, inputs, d, s, points[s])
            for d in HAND_SIDES
            for s in HAND_SIDES
        }
    out = {name: np.stack([np.stack([per[(d, s)][name] for s in HAND_SIDES]) for d in HAND_SIDES])
           for name in ("attended", "pixel", "occ_init")}  # fmt: skip
    out["occ_gt"] = np.stack([occ_gt[s] for s in HAND_SIDES]).astype(np.uint8)
    out["valid"] = np.uint8(1)
    return out


def _read_meta(folder: Path) -> dict | None:
    return read_meta(folder / META_FILE)


def _write_meta(folder: Path, meta: dict) -> None:
    write_meta(folder / META_FILE, meta)


def build_ref_cache(
    net: RefOccNet,
    dataset,
    folder: str | Path,
    spec: RefCacheSpec | None = None,
    *,
    count: int | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    flush_every: int = 16,
) -> Path:
    """Fill ``folder`` with the cached values of the first ``count`` samples of ``dataset`` (a
    :class:`~core.training.datasets.SynthFolderDataset`; default: all). Resumes a build of the
    same weights, spec and count; anything else there is replaced.

    Long: one pass over the dataset writing several arrays per sample from shared state."""
    from core.engine.engine import Engine

    if not isinstance(dataset, SynthFolderDataset):
        raise DatasetError("R's cache needs a synth_folder dataset (samples with meshes and images)")
    spec = spec or RefCacheSpec()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = len(dataset) if count is None else min(int(count), len(dataset))
    fingerprint = frozen_fingerprint(net)
    m = spec.points_per_hand
    widths = (net.trans_dec.ct1.fc_gamma[0].in_features, net.cfg.image_feature_dim)
    meta = _read_meta(folder)
    # a cache of the same weights and spec is resumed (and never shrunk: a shorter dataset
    # uses its first samples); anything else is replaced
    fresh = not (meta and meta["fingerprint"] == fingerprint and meta["spec"] == spec.to_json())
    if fresh:
        meta = {"count": count, "filled": 0, "spec": spec.to_json(), "fingerprint": fingerprint}
        meta["widths"] = list(widths)
        (folder / META_FILE).unlink(missing_ok=True)
    elif meta["count"] < count:
        raise DatasetError(
            f"the R cache in {folder} was made for {meta['count']} samples, the dataset has {count}; "
            "delete it to rebuild"
        )
    count = meta["count"]
    arrays = {
        name: np.lib.format.open_memmap(
            folder / f"{name}.npy",
            mode="w+" if fresh else "r+",
            dtype=dtype,
            shape=(count, *shape(m, *widths)),
        )
        for name, (dtype, shape) in ARRAYS.items()
    }
    if fresh:
        _write_meta(folder, meta)
    engine = Engine.from_networks(ref=net, device=str(device))
    was_training = net.training
    net.eval()
    try:
        for i in range(meta["filled"], count):
            sample = dataset.sample(i)
            entry = sample_cache_entry(net, engine, sample, spec, i)
            if entry is None:
                arrays["valid"][i] = 0
            else:
                for name, arr in arrays.items():
                    arr[i] = entry[name]
            engine.clear_cache()
            if (i + 1) % flush_every == 0 or i + 1 == count:
                for arr in arrays.values():
                    arr.flush()
                meta["filled"] = i + 1
                _write_meta(folder, meta)
            if progress is not None:
                progress(i + 1, count)
    finally:
        net.train(was_training)
    return folder


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------
class RefCache:
    """Read-only view of a cache folder for the weights ``net`` (checked by fingerprint)."""

    def __init__(self, folder: str | Path, net: RefOccNet | None = None):
        self.folder = Path(folder)
        meta = _read_meta(self.folder)
        if meta is None:
            raise DatasetError(f"no R cache in {self.folder}")
        if net is not None and meta["fingerprint"] != frozen_fingerprint(net):
            raise DatasetError(
                f"the R cache in {self.folder} was made with other frozen weights; delete it to rebuild"
            )
        self.meta = meta
        self.filled = int(meta["filled"])
        self.arrays = {
            name: np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ARRAYS
        }

    def __len__(self) -> int:
        return self.filled

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.filled:
            raise IndexError(index)
        return {name: torch.from_numpy(np.array(arr[index])) for name, arr in self.arrays.items()}


class RefCacheDataset(_Addressed):
    """Items ``(index, draw)`` = the cached values of sample ``index`` (the draw is ignored:
    one stored point draw per sample)."""

    def __init__(self, cache: RefCache, length: int, spec=None):
        if length > len(cache):
            raise DatasetError(f"the R cache holds {len(cache)} samples, the dataset {length}")
        self.cache, self.length, self.spec = cache, int(length), spec

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, _ = self._split(key)
        return self.cache[index]


def cache_matches(folder: str | Path, net: RefOccNet, spec: RefCacheSpec, length: int) -> bool:
    """A complete cache of these frozen weights and spec covering ``length`` samples."""
    meta = _read_meta(Path(folder))
    return (
        bool(meta)
        and meta["fingerprint"] == frozen_fingerprint(net)
        and meta["spec"] == spec.to_json()
        and (meta["filled"] >= length)
    )


def split_by_role(values: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 2 decoders, 2 point sets, ...) -> the keys of :func:`core.training.losses.ref_occ_loss`
    (``left``, ``right``: each hand at its own points; ``right_at_left``, ``left_at_right``)."""
    return {
        "left": values[:, 0, 0],
        "right": values[:, 1, 1],
        "right_at_left": values[:, 1, 0],
        "left_at_right": values[:, 0, 1],
    }


def tail_parameters(net: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in net.named_parameters() if n.startswith(TAIL_PREFIXES)]
