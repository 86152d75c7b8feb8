"""The training recipes of networks K, I, R and the HALO-only baseline.

A :class:`Recipe` builds its network (and initialises it from earlier stages), says which
items it needs, builds the optimiser and schedule, and computes the loss of one batch.
Reference values (official_code.md §A.3.4, §A.4.2, §A.5) and where ours differ:

* **HALO** (keypoints only; the "HALO" row): HALO base decoder, MSE on probabilities,
  Adam 1e-4. Trained on our synthetic data from scratch (xavier-normal init).
* **I**: MSE on probabilities, batch 8, 4096 points/hand in the reference, Adam **1e-5**
  there because its decoders start from the HALO baseline and its encoder from IntagHand.
  Our image encoder starts from scratch, so we use Adam 1e-4 (``lr`` in the config); the
  decoders start from our HALO baseline, with the 19 image columns of layer 2 set to zero
  so that I starts exactly at HALO. Depth reference: the wrist (order-independent).
* **R**: Adam 1e-4, weight decay 1e-5, StepLR(5000, 0.2) stepped per iteration, batch 2,
  2048 points/hand; loss = MSE + 0.001 x penetration sum (the ``pen`` path). R's image
  encoder starts from I's, as in the reference; ours stays **frozen and shared** with I
  (one encoder shipped, one encoder pass per image). Anchors: ground-truth surface + noise
  (see :func:`core.training.datasets.sample_anchors`).
  Ours, for a CPU budget (``ref_cache``, the shipped recipe): R starts from an earlier R (its I
  and frozen parts), its decoder tail starts as the identity of I's occupancy and is the only
  part that trains, on cached inputs computed the way the engine runs R (anchors on I's
  iso-surface); the data term mixes the ground truth (inside points weighted) with R's identity
  output where I's overlaps are resolved for the more confident hand (see RefRecipe).
* **K**: Adam 1e-4, MSE on middle-MCP-centred joints in mm. The image encoder is I's
  (frozen, shared). ``root_weight`` > 0 adds an MSE on each hand's middle MCP position in
  K's frame (ours; the reference leaves the global position unsupervised, which lets the
  refined hands drift apart and changes the image crop and the penetration between hands).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.checkpoints import save_checkpoint
from core.geometry.canonical import canonicalize_two_hands, halo_base_inputs
from core.hand.joints import HALO_MIDDLE_MCP, HAND_SIDES, convert_joints
from core.models.config import HALO_BASE_DECODER
from core.models.halo_base import HaloBaseNet
from core.models.image_encoder import normalize_image, upsample_bilinear
from core.models.init_occ import HandInputs, InitOccImageFeatures, InitOccNet, init_weights_official
from core.models.kpts_ref import KeypointRefiner
from core.models.ref_occ import RefOccImageFeatures, RefOccNet
from core.models.registry import load_network
from core.training import losses
from core.training.datasets import ItemSpec
from core.training.netconfigs import TrainConfigError, init_occ_config, kpts_ref_config, ref_occ_config

NETWORK_NAMES = {"halo": "halo_base", "init": "init_occ", "ref": "ref_occ", "kpts": "kpts_ref"}


@dataclass(frozen=True)
class TrainConfig:
    """One network's training run (a section of a ``configs/*.json`` file)."""

    network: str  # halo | init | ref | kpts
    data: dict  # see core.training.datasets.dataset_from_spec
    backbone: str = "resnet18"
    batch_size: int = 8
    points_per_hand: int = 4096
    num_anchors: int = 512  # R only
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_step: int = 0  # StepLR step (iterations); 0 = constant learning rate
    lr_gamma: float = 1.0
    max_iters: int = 1000
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    init_from: str | None = None  # earlier stage's exported weights (relative to --out)
    pen_weight: float = 0.001  # R
    contact_fraction: float = 0.0  # R: share of query points from the contact set (ours; 0 = reference)
    identity_init: bool = False  # R / K start as the identity of their input (ours; see the recipes)
    root_weight: float = 0.0  # K (0 = reference loss)
    renoise: bool = False  # K, synthetic data: fresh noisy keypoints per item and epoch (ours)
    # K: folder of cached image feature maps (relative to --out; built on first use; ours, for a
    # CPU budget; see core.training.feature_cache)
    feature_cache: str | None = None
    # K with feature_cache: cache the encoder's maps before K's 1x1 projection (2.6 MB per sample
    # instead of 512 KiB) so that the projection trains as without a cache (ours)
    cache_encoder_maps: bool = False
    # K: the network's dropout during training (None = the network default, 0.01 as the
    # reference). Ours: at 0.01 a dropped channel of K's identity path loses a whole
    # coordinate (tens of mm), which doubled K's training loss; inference never drops.
    dropout: float | None = None
    # K: "mse" (reference: MSE of middle-MCP-centred joints, mm^2) or "mpjpe" (ours: their mean
    # Euclidean error in mm, the evaluation's metric; less pulled by rare large errors such as
    # swapped fingers). The root term follows: squared resp. plain distance of each middle MCP.
    kpts_loss: str = "mse"
    # K: the skeleton graph of its GCN layers: "undirected" (ours, default: every joint can
    # average its noise against its neighbours) or "directed" (the reference's parent->child
    # matrix, with which each joint only sees its descendants; see core.models.gcn)
    kpts_graph: str = "undirected"
    # I: keep the (randomly initialised) image encoder's weights fixed and train the rest; its
    # BatchNorm statistics still adapt to the data (ours, for a CPU budget; see InitRecipe)
    freeze_encoder: bool = False
    # I (ours): start every weight except the two decoders -- image encoder with its BatchNorm
    # statistics, attention, projections -- from this earlier I (or an R holding one, packed
    # files too), and keep the encoder's statistics fixed while training, so that the encoder
    # that R and K share stays bit-identical. The decoders still come from init_from (HALO).
    init_keep_from: str | None = None
    torch_threads: int = 2
    # R: folder of cached frozen decoder inputs (relative to --out; built on first use; ours, for
    # a CPU budget): R then trains its decoder's MLP tail only, on anchors taken from I's
    # surface as the engine takes them (see core.training.ref_cache)
    ref_cache: str | None = None
    # global gradient-norm clip of the trained parameters (0 = none; ours)
    grad_clip: float = 0.0
    # R: weight of the errors at inside points in the data term (1 = reference MSE; ours, see
    # core.training.losses.weighted_occupancy_mse)
    pos_weight: float = 1.0
    # R with ref_cache: share of the data term taken against R's identity start
    # sigmoid(12 (o_I - t)) instead of the ground truth (ours; a regulariser that keeps R at I's
    # level set except where the penetration term asks otherwise; 0 = ground truth only)
    identity_weight: float = 0.0
    # R with identity_weight: the start target of a hand is zero where the other hand's I
    # occupancy is above 0.5 and above its own (I's overlaps resolved in favour of the more
    # confident hand), and the target also applies at the other hand's points (ours)
    resolve_overlap: bool = False
    # R with resolve_overlap: weight of the points where that target differs from the identity
    # (the overlaps are rare; ours)
    overlap_point_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.network not in NETWORK_NAMES:
            raise TrainConfigError(f"network must be one of {sorted(NETWORK_NAMES)}, got {self.network!r}")
        if self.kpts_loss not in ("mse", "mpjpe"):
            raise TrainConfigError(f"kpts_loss must be 'mse' or 'mpjpe', got {self.kpts_loss!r}")
        if self.kpts_graph not in ("directed", "undirected"):
            raise TrainConfigError(f"kpts_graph must be 'directed' or 'undirected', got {self.kpts_graph!r}")
        if self.cache_encoder_maps and not self.feature_cache:
            raise TrainConfigError("cache_encoder_maps needs a feature_cache folder")
        for name in ("batch_size", "max_iters", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise TrainConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_sections(cls, sections: dict, network: str, overrides: dict | None = None) -> TrainConfig:
        """``{"common": {...}, "<network>": {...}}`` -> the merged config of ``network``."""
        if network not in sections:
            raise TrainConfigError(f"the training config has no section {network!r}")
        merged = {**sections.get("common", {}), **sections[network], "network": network, **(overrides or {})}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise TrainConfigError(f"unknown training config key(s): {', '.join(unknown)}")
        if "data" not in merged:
            raise TrainConfigError("the training config needs a 'data' block")
        return cls(**merged)


# ----------------------------------------------------------------------------------------
# Batch helpers (pure functions of tensors)
# ----------------------------------------------------------------------------------------
def hand_inputs_from_joints(left: torch.Tensor, right: torch.Tensor, device) -> dict[str, HandInputs]:
    """Camera-frame keypoints (B, 21, 3) of both hands -> I/R inputs (camera R = I, T = 0),
    as :meth:`core.engine.hands.HandFrame.network_inputs` builds them for one hand."""
    halo = canonicalize_two_hands(left.double().cpu(), right.double().cpu(), validate=False)
    B = left.shape[0]
    out = {}
    for side, joints in (("left", left), ("right", right)):
        h = halo[side]
        wrist = joints[:, 0].double().cpu()
        if side == "left":
            wrist = wrist * wrist.new_tensor([-1.0, 1.0, 1.0])
        f32 = dict(dtype=torch.float32, device=device)
        out[side] = HandInputs(
            unpose_mats=h.unpose_mats.to(device=device),
            bone_lengths=h.bone_lengths.to(**f32),
            root_rot_mat=h.root_rot_mat.to(**f32),
            root_xyz=wrist.to(**f32),
            cam_R=torch.eye(3, **f32).expand(B, 3, 3).contiguous(),
            cam_T=torch.zeros(B, 3, **f32),
        )
    return out


def halo_inputs_from_joints(joints: torch.Tensor, side: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 21, 3) camera-frame keypoints -> HALO base inputs (unpose mats float64, lengths)."""
    base = halo_base_inputs(joints.double().cpu(), side, validate=False)
    return base.unpose_mats.to(device), base.bone_lengths.to(device=device, dtype=torch.float32)


def kpts_frame_mm(joints_mano_m: dict[str, torch.Tensor], origin_m: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both hands (B, 21, 3) ``mano`` camera metres -> K's frame: ``halo`` order, mm,
    relative to ``origin_m`` (B, 1, 3) (the left hand's middle MCP of K's input)."""
    return {s: convert_joints((j - origin_m) * 1000.0, "mano", "halo") for s, j in joints_mano_m.items()}


def batch_images(batch: dict, device) -> torch.Tensor:
    return normalize_image(batch["image"].to(device))


def _points(batch: dict, device) -> dict[str, torch.Tensor]:
    return {s: batch[f"points_{s}"].to(device) for s in HAND_SIDES}


def _targets(batch: dict, device) -> dict[str, torch.Tensor]:
    return {s: batch[f"occ_{s}"].to(device) for s in HAND_SIDES}


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the network itself)."""
    return model.module if hasattr(model, "module") else model


def occupancy_iou(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor], thr: float) -> float:
    """Mean over hands of the IoU of thresholded predictions at the training points (a cheap
    training-time metric, like the reference's validation IoU)."""
    ious = []
    for s in pred:
        p, t = pred[s] >= thr, target[s] >= 0.5
        union = (p | t).sum().item()
        ious.append((p & t).sum().item() / union if union else 1.0)
    return float(np.mean(ious))


# ----------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------
@dataclass
class Recipe:
    cfg: TrainConfig
    out_dir: Path
    frozen_prefixes: tuple[str, ...] = field(default=())

    network_name = ""

    def __post_init__(self) -> None:
        """Subclasses set their frozen prefixes here (defined on the base class so that the
        dataclass-generated __init__ calls the subclasses' overrides)."""

    def item_spec(self) -> ItemSpec:
        return ItemSpec(points_per_hand=self.cfg.points_per_hand, seed=self.cfg.seed)

    def model_config(self):
        return None

    def build(self) -> nn.Module:
        raise NotImplementedError

    def config_path(self, value: str) -> Path:
        """A path of the config: absolute, or relative to the run's output folder."""
        path = Path(value)
        return path if path.is_absolute() else self.out_dir / path

    def init_path(self) -> Path:
        if not self.cfg.init_from:
            raise TrainConfigError(
                f"training {self.cfg.network} needs 'init_from' (an earlier stage's weights)"
            )
        path = self.config_path(self.cfg.init_from)
        if not path.is_file():
            raise TrainConfigError(f"init_from weights not found: {path} (train the earlier stage first)")
        return path

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        return [
            p
            for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith(self.frozen_prefixes)
        ]

    def prepare_dataset(self, dataset, model: nn.Module, device):
        """The dataset the loop reads, given the built model (a recipe may wrap it)."""
        return dataset

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.trainable(model), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def scheduler(self, opt: torch.optim.Optimizer):
        step = self.cfg.lr_step if self.cfg.lr_step > 0 else 10**9
        return torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=self.cfg.lr_gamma)

    def loss(self, model: nn.Module, batch: dict, device) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def export(self, model: nn.Module, path: Path, metadata: dict) -> Path:
        return save_checkpoint(path, model, self.network_name, config=self.model_config(), metadata=metadata)


class HaloRecipe(Recipe):
    network_name = "halo_base"

    def item_spec(self) -> ItemSpec:
        return ItemSpec(points_per_hand=self.cfg.points_per_hand, seed=self.cfg.seed, crop_with="none",
                        needs_image=False)  # fmt: skip

    def build(self) -> nn.Module:
        net = HaloBaseNet(HALO_BASE_DECODER)
        net.apply(init_weights_official)
        return net

    def loss(self, model, batch, device):
        pred = {}
        for s in HAND_SIDES:
            mats, lengths = halo_inputs_from_joints(batch[f"joints_{s}"], s, device)
            pred[s] = model(batch[f"points_{s}"].to(device), mats, lengths)
        target = _targets(batch, device)
        loss = losses.occupancy_mse(pred, target)
        return loss, {"loss": loss.item(), "iou": occupancy_iou(pred, target, 0.5)}


def init_decoders_from_halo(net: InitOccNet, halo_state: dict[str, torch.Tensor]) -> int:
    """Copy the HALO baseline decoder into I's two decoders; the image-feature columns of the
    injection layer start at zero so that I starts out exactly as HALO. Returns #tensors."""
    target = net.state_dict()
    n = 0
    for key, value in halo_state.items():
        if not key.startswith("decoder."):
            continue
        for side in HAND_SIDES:
            name = f"{side}_{key}"
            t = target[name]
            if t.shape == value.shape:
                t.copy_(value)
            elif t.dim() == 2 and t.shape[0] == value.shape[0] and t.shape[1] > value.shape[1]:
                t.zero_()
                t[:, : value.shape[1]].copy_(value)
            else:
                raise TrainConfigError(f"HALO tensor {key} {tuple(value.shape)} does not fit {name}")
            n += 1
    return n


class InitRecipe(Recipe):
    network_name = "init_occ"

    def item_spec(self) -> ItemSpec:
        return ItemSpec(points_per_hand=self.cfg.points_per_hand, seed=self.cfg.seed, crop_with="gt")

    def model_config(self):
        return init_occ_config(self.cfg.backbone)

    def build(self) -> nn.Module:
        net = InitOccNet(self.model_config())
        net.apply(init_weights_official)
        if self.cfg.init_keep_from:
            path = self.config_path(self.cfg.init_keep_from)
            earlier = load_network(path)
            earlier = earlier.init_occ if isinstance(earlier, RefOccNet) else earlier
            if not isinstance(earlier, InitOccNet):
                raise TrainConfigError(f"init_keep_from must hold network I (or R); {path} does not")
            net.load_state_dict(earlier.state_dict())
        if self.cfg.init_from:
            halo = load_network(self.init_path())
            with torch.no_grad():
                init_decoders_from_halo(net, halo.state_dict())
        if self.cfg.freeze_encoder:
            # No gradients through the ResNet (two thirds of a step on a CPU); in train mode its
            # BatchNorm layers still track the data's statistics, which R and K inherit.
            net.image_encoder.requires_grad_(False)
        return net

    def loss(self, model, batch, device):
        if self.cfg.init_keep_from:  # the shared encoder stays bit-identical (see TrainConfig)
            unwrap(model).image_encoder.eval()
        img = batch_images(batch, device)
        hands = hand_inputs_from_joints(batch["joints_left"], batch["joints_right"], device)
        pred = model(img, hands, _points(batch, device), chunk_size=None)
        target = _targets(batch, device)
        loss = losses.occupancy_mse(pred, target)
        return loss, {"loss": loss.item(), "iou": occupancy_iou(pred, target, 0.5)}


def share_encoder_from_init(dst: nn.Module, init: InitOccNet, final_layer: bool) -> None:
    """Copy I's image encoder (and optionally its 1x1 final layer) into ``dst``."""
    with torch.no_grad():
        dst.image_encoder.load_state_dict(init.image_encoder.state_dict())
        if final_layer:
            dst.image_final_layer.load_state_dict(init.image_final_layer.state_dict())


def encode_image_shared(ref: RefOccNet, img: torch.Tensor) -> RefOccImageFeatures:
    """:meth:`RefOccNet.encode_image` for an R whose encoder equals I's (frozen, shared):
    one encoder pass feeds both R's heads and I's features."""
    with torch.no_grad():
        enc = ref.init_occ.image_encoder(img)
        init = ref.init_occ
        fmap_i = init.image_final_layer(torch.cat([enc.hms_fmaps[-1], enc.dp_fmaps[-1]], dim=1))
        tokens = {s: init._side(s)[1].encode(fmap_i) for s in HAND_SIDES}
    size = ref.cfg.feature_map_size
    ups = [upsample_bilinear(enc.hms_fmaps[-1], size), upsample_bilinear(enc.dp_fmaps[-1], size)]
    fmap = ref.image_final_layer(torch.cat(ups, dim=1))
    img_global = torch.cat(
        [ref.hms_global_layer(enc.hms_fmaps[0]).flatten(1), ref.dp_global_layer(enc.dp_fmaps[0]).flatten(1)],
        1,
    )
    return RefOccImageFeatures(fmap, img_global, InitOccImageFeatures(fmap_i, tokens))


def identity_offset(logit_scale: float) -> float:
    """The offset t of R's identity start k (o_I - t) at scale k: R's 0.45 level falls on I's
    0.5 level, t = 0.5 - logit(0.45) / k."""
    return 0.5 - float(torch.logit(torch.tensor(0.45))) / logit_scale


# I's occupancy o_I -> R's logit k (o_I - t): R's 0.45 level sits on I's 0.5 level.
IDENTITY_LOGIT_SCALE = 12.0
IDENTITY_OFFSET = identity_offset(IDENTITY_LOGIT_SCALE)


def identity_ref_occupancy(occ_init: torch.Tensor) -> torch.Tensor:
    """R's output at its identity start, sigmoid(k (o_I - t)), from I's occupancy."""
    return torch.sigmoid(IDENTITY_LOGIT_SCALE * (occ_init - IDENTITY_OFFSET))


def overlap_losers(occ_init: torch.Tensor) -> torch.Tensor:
    """(B, 2 decoders, 2 point sets, M) I occupancies -> True where the other hand's I
    occupancy at the same point is above 0.5 and above this hand's (the less confident hand
    of one of I's overlaps)."""
    other = occ_init.flip(1)  # decoder d <-> 1 - d at the same points
    return (other > 0.5) & (other > occ_init)


def resolved_start_target(occ_init: torch.Tensor) -> torch.Tensor:
    """R's identity output with I's overlaps resolved: zero at :func:`overlap_losers` (ours; a
    target that removes the less confident hand from I's overlaps)."""
    return identity_ref_occupancy(occ_init) * (~overlap_losers(occ_init)).to(occ_init.dtype)


def identity_init_ref_decoder(net: RefOccNet, logit_scale: float = IDENTITY_LOGIT_SCALE) -> None:
    """Make R's decoder start as ``sigmoid(k (o_I - t))`` of I's occupancy (ours; a training
    shortcut for a CPU budget): hidden channel 0 of ``init_enc`` reads k times the mean of the
    32 repeated I-occupancy inputs minus k t -- the logit itself --, the conditioning of
    channel 0 is zeroed, the ResNet blocks start as the identity (their ``fc_1`` is
    zero-initialised) and ``fc_out`` passes channel 0 through (weight 1, bias 0). Training
    then learns corrections (contact flattening) instead of I itself. The scale k sits in
    ``init_enc`` rather than in ``fc_out`` so that a learning step on anything that feeds
    channel 0 is not multiplied by k on its way to the logit."""
    dec = net.trans_dec
    n_occ = net.cfg.init_occ_repeat
    occ_cols = slice(dec.init_enc.in_features - n_occ, dec.init_enc.in_features)
    dec.init_enc.weight[0].zero_()
    dec.init_enc.weight[0, occ_cols] = logit_scale / n_occ
    dec.init_enc.bias[0] = -logit_scale * identity_offset(logit_scale)
    for fc in dec.fc_c:
        fc.weight[0].zero_()
        fc.bias[0] = 0.0
    for block in dec.blocks:
        block.fc_1.weight.zero_()
        block.fc_1.bias.zero_()
    dec.fc_out.weight.zero_()
    dec.fc_out.weight[0, 0] = 1.0
    dec.fc_out.bias.zero_()


class ClippedAdam(torch.optim.Adam):
    """Adam whose step first clips the global gradient norm of its parameters to ``max_norm``
    (R, ours: a few points of the contact set can dominate a small batch's gradient)."""

    def __init__(self, params, max_norm: float, **kwargs):
        super().__init__(params, **kwargs)
        self.max_norm = float(max_norm)

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if params and self.max_norm > 0:
            nn.utils.clip_grad_norm_(params, self.max_norm)
        return super().step(closure)


def identity_tail_untouched(net: RefOccNet) -> bool:
    """Whether R's decoder tail is still exactly as :func:`identity_init_ref_decoder` left it
    (``fc_out`` reads channel 0 only and every ResNet block is the identity)."""
    dec = net.trans_dec
    return bool(
        torch.all(dec.fc_out.weight[0, 1:] == 0)
        and dec.fc_out.weight[0, 0] == 1.0
        and dec.fc_out.bias[0] == 0.0
        and all(torch.all(b.fc_1.weight == 0) and torch.all(b.fc_1.bias == 0) for b in dec.blocks)
    )


class RefRecipe(Recipe):
    """Network R. Two ways to train (``ref_cache``):

    * without: the reference recipe (every part of R except I and the shared encoder trains;
      anchors from the ground-truth surface + noise, a stand-in for I's surface);
    * with (ours, for a CPU budget; see :mod:`core.training.ref_cache`): only the decoder's MLP
      tail trains, on cached values of everything before it, computed once per sample the way
      the engine runs R (anchors on I's iso-surface). A step takes milliseconds instead of
      seconds; the rest of R keeps its initial weights (those of ``init_from`` when that is an
      R, else random), BatchNorm statistics included, exactly as the engine uses them.

    ``init_from``: network I's weights (R is built around them), or an earlier R (fine-tuned;
    a packed shipped file works too)."""

    network_name = "ref_occ"

    def __post_init__(self):
        self.frozen_prefixes = ("init_occ.", "image_encoder.")

    def item_spec(self) -> ItemSpec:
        return ItemSpec(
            points_per_hand=self.cfg.points_per_hand,
            num_anchors=self.cfg.num_anchors,
            seed=self.cfg.seed,
            crop_with="gt",
            contact_fraction=self.cfg.contact_fraction,
        )

    def model_config(self):
        return ref_occ_config(self.cfg.backbone)

    def cache_spec(self):
        from core.training.ref_cache import RefCacheSpec

        cfg = self.cfg
        return RefCacheSpec(
            points_per_hand=cfg.points_per_hand, contact_fraction=cfg.contact_fraction, seed=cfg.seed
        )

    def build(self) -> nn.Module:
        net = RefOccNet(self.model_config())
        init = load_network(self.init_path())
        if isinstance(init, RefOccNet):  # fine-tuning an earlier R (its I inside)
            net.load_state_dict(init.state_dict())
        elif isinstance(init, InitOccNet):
            with torch.no_grad():
                net.init_occ.load_state_dict(init.state_dict())
            share_encoder_from_init(net, init, final_layer=True)
        else:
            raise TrainConfigError(
                f"R starts from network I's (or an earlier R's) weights; {self.init_path()} holds "
                "another network"
            )
        net.image_encoder.requires_grad_(False)
        if self.cfg.identity_init:
            with torch.no_grad():
                identity_init_ref_decoder(net)
        return net

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        if self.cfg.ref_cache:
            from core.training.ref_cache import tail_parameters

            return tail_parameters(model)
        return super().trainable(model)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        kwargs = dict(lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        if self.cfg.grad_clip > 0:
            return ClippedAdam(self.trainable(model), self.cfg.grad_clip, **kwargs)
        return torch.optim.Adam(self.trainable(model), **kwargs)

    def prepare_dataset(self, dataset, model, device):
        """With ``ref_cache``: items are the cached decoder inputs of their sample (built here on
        first use). A tail still at its identity initialisation gets its data-dependent scaling
        (:func:`core.training.ref_cache.normalise_tail_init`) from the first 16 samples."""
        if not self.cfg.ref_cache:
            return dataset
        from core.training import ref_cache as rc

        net = unwrap(model)
        folder = self.config_path(self.cfg.ref_cache)
        spec = self.cache_spec()
        if not rc.cache_matches(folder, net, spec, len(dataset)):
            rc.build_ref_cache(net, dataset, folder, spec, device=device)
        cached = rc.RefCacheDataset(rc.RefCache(folder, net), len(dataset))
        if self.cfg.identity_init and identity_tail_untouched(net):
            first = [cached[i] for i in range(min(16, len(cached)))]
            stack = lambda k: torch.stack([it[k] for it in first]).float().to(device)
            rc.normalise_tail_init(net, stack("attended"), stack("pixel"), stack("occ_init"))
        return cached

    def loss(self, model, batch, device):
        ref: RefOccNet = unwrap(model)
        if "attended" in batch:
            return self._cached_loss(ref, batch, device)
        ref.image_encoder.eval()  # frozen and shared: BatchNorm on running statistics
        img = batch_images(batch, device)
        cam_K = batch["camera_K"].to(device)
        hands = hand_inputs_from_joints(batch["joints_left"], batch["joints_right"], device)
        points = _points(batch, device)
        anchors = {s: batch[f"anchors_{s}_mm"].to(device) for s in HAND_SIDES}
        out = ref.occupancies(encode_image_shared(ref, img), hands, cam_K, points, anchors, pen=True)
        target = _targets(batch, device)
        loss, parts = losses.ref_occ_loss(out, target, self.cfg.pen_weight)
        pred = {s: out[s] for s in HAND_SIDES}
        return loss, {"loss": loss.item(), **parts, "iou": occupancy_iou(pred, target, 0.45)}

    def _cached_loss(self, ref: RefOccNet, batch: dict, device):
        from core.training import ref_cache as rc

        f32 = dict(device=device, dtype=torch.float32)
        occ_init = batch["occ_init"].to(**f32)  # (B, 2 decoders, 2 point sets, M)
        logits = rc.tail_logits(ref, batch["attended"].to(**f32), batch["pixel"].to(**f32), occ_init)
        out = rc.split_by_role(torch.sigmoid(logits))
        target = {s: batch["occ_gt"][:, i].to(**f32) for i, s in enumerate(HAND_SIDES)}
        cfg = self.cfg
        start = point_weight = None
        if cfg.identity_weight > 0:
            identity = identity_ref_occupancy(occ_init)
            if cfg.resolve_overlap:  # the target also applies at the other hand's points
                loses = overlap_losers(occ_init).to(identity.dtype)
                start = rc.split_by_role(identity * (1.0 - loses))
                point_weight = rc.split_by_role(1.0 + (cfg.overlap_point_weight - 1.0) * loses)
            else:
                start = {s: v for s, v in rc.split_by_role(identity).items() if s in HAND_SIDES}
        loss, parts = losses.ref_occ_loss(
            out, target, cfg.pen_weight, cfg.pos_weight, start, cfg.identity_weight, point_weight
        )
        with torch.no_grad():
            init = rc.split_by_role(occ_init)
            pen_init = losses.penetration_sum(
                init["left"], init["right_at_left"], init["right"], init["left_at_right"]
            )
        pred = {s: out[s] for s in HAND_SIDES}
        return loss, {
            "loss": loss.item(),
            **parts,
            "iou": occupancy_iou(pred, target, 0.45),
            "iou_init": occupancy_iou({s: init[s] for s in HAND_SIDES}, target, 0.5),
            "pen_init": pen_init.item(),
        }


def identity_init_kpts_ref(net: KeypointRefiner) -> None:
    """Make K start as the identity of its input keypoints (ours; a training shortcut for a CPU
    budget -- K's output is absolute, not a residual, and learning to copy its input through
    four attention layers took most of a short training). Each coordinate enters the point
    embedding as relu(+c), relu(-c) (channels 0-5), the pre-LN attention blocks of every
    layer start with zero output projections (their residual paths pass the joint features
    unchanged; the graph layers only append channels), and the regressor rebuilds
    c = relu(+c) - relu(-c). Everything else keeps its initialisation and starts learning
    corrections from the first step (the zeroed projections receive gradients)."""
    n_id = net.cfg.joint_id_dim
    for side in HAND_SIDES:
        emb = getattr(net, f"{side}_pt_emb")
        first, last = emb[0], emb[3]
        for axis in range(3):
            for sign_idx, sign in enumerate((1.0, -1.0)):
                row = 2 * axis + sign_idx
                first.weight[row].zero_()
                first.weight[row, axis, 0] = sign
                first.bias[row] = 0.0
        last.weight[:6].zero_()
        last.bias[:6] = 0.0
        for row in range(6):
            last.weight[row, row, 0] = 1.0
        reg = net.left_reg if side == "left" or net.cfg.right_uses_left_regressor else net.right_reg
        reg[0].weight[:6].zero_()
        reg[0].bias[:6] = 0.0
        for row in range(6):
            reg[0].weight[row, n_id + row, 0] = 1.0
        reg[3].weight.zero_()
        reg[3].bias.zero_()
        for axis in range(3):
            reg[3].weight[axis, 2 * axis, 0] = 1.0
            reg[3].weight[axis, 2 * axis + 1, 0] = -1.0
    for layer in net.gcn_layers:
        for side in HAND_SIDES:
            attn = getattr(layer, f"img_ex_{side}").attn.Attn
            for lin in (attn.fc, attn.ff.fc2):
                lin.weight.zero_()
                lin.bias.zero_()


class KptsRecipe(Recipe):
    network_name = "kpts_ref"

    def __post_init__(self):
        # With a cache of projected features the projection after the encoder is frozen too
        # (its output is what the cache holds); otherwise it trains, as in the reference.
        projected = bool(self.cfg.feature_cache) and not self.cfg.cache_encoder_maps
        self.frozen_prefixes = ("image_encoder.", "img_proj_layer.") if projected else ("image_encoder.",)

    def cache_content(self) -> str:
        from core.training import feature_cache as fc

        return fc.MAPS_KEY if self.cfg.cache_encoder_maps else fc.CACHED_KEY

    def item_spec(self) -> ItemSpec:
        # K sees the crop the engine makes around the keypoints it is given (the noisy ones).
        if self.cfg.feature_cache:  # the crops' feature maps come from the cache
            return ItemSpec(points_per_hand=1, seed=self.cfg.seed, crop_with="none", needs_image=False,
                            renoise=self.cfg.renoise)  # fmt: skip
        return ItemSpec(points_per_hand=1, seed=self.cfg.seed, crop_with="noisy", renoise=self.cfg.renoise)

    def prepare_dataset(self, dataset, model, device):
        """With ``feature_cache``: items carry the cached (projected or pre-projection) map of
        their sample's stored-keypoint crop (built here on first use; see
        core.training.feature_cache)."""
        if not self.cfg.feature_cache:
            return dataset
        from core.training import feature_cache as fc
        from core.training.datasets import dataset_from_spec

        net = unwrap(model)
        folder = self.config_path(self.cfg.feature_cache)
        content = self.cache_content()
        if not fc.cache_matches(folder, net, len(dataset), content):
            crops = ItemSpec(points_per_hand=1, seed=self.cfg.seed, crop_with="noisy")
            fc.build_feature_cache(
                net, dataset_from_spec(self.cfg.data, crops), folder, content=content, device=device
            )
        return fc.CachedFeatureDataset(dataset, fc.FeatureCache(folder, net, len(dataset), content))

    def model_config(self):
        return kpts_ref_config(self.cfg.backbone, self.cfg.dropout, self.cfg.kpts_graph == "undirected")

    def build(self) -> nn.Module:
        net = KeypointRefiner(self.model_config())
        net.apply(init_weights_official)
        init = load_network(self.init_path()) if self.cfg.init_from else None
        if isinstance(init, KeypointRefiner):  # fine-tuning an earlier K: all of its weights
            if self.cfg.identity_init:
                raise TrainConfigError("identity_init would overwrite the K weights given in init_from")
            if init.cfg.undirected_graph != net.cfg.undirected_graph:
                kind = "undirected" if init.cfg.undirected_graph else "directed"
                raise TrainConfigError(
                    f"the K in init_from runs a {kind} skeleton graph; "
                    f"set \"kpts_graph\": \"{kind}\" to fine-tune it"
                )
            net.load_state_dict(init.state_dict())
        elif init is not None:  # I (or R's I): the shared encoder only
            share_encoder_from_init(net, init, final_layer=False)
        net.image_encoder.requires_grad_(False)
        if self.cfg.identity_init:
            with torch.no_grad():
                identity_init_kpts_ref(net)
        return net

    def loss(self, model, batch, device):
        net: KeypointRefiner = unwrap(model)
        net.image_encoder.eval()
        noisy = {s: batch[f"noisy_joints_{s}"].double() for s in HAND_SIDES}
        gt = {s: batch[f"joints_{s}"].double() for s in HAND_SIDES}
        origin = noisy["left"][:, 9:10]  # left middle MCP (mano joint 9) of K's input
        k_in = kpts_frame_mm(noisy, origin)
        k_gt = kpts_frame_mm(gt, origin)
        # The encoder is frozen (I's weights). Its 1x1 projection learns, as in the reference,
        # except with a cache of projected features (a constant of the crop only while the
        # projection is frozen; see __post_init__).
        img = None
        if "image_features" in batch:
            feat = batch["image_features"].to(device=device, dtype=torch.float32)
        elif "encoder_maps" in batch:
            feat = net.img_proj_layer(batch["encoder_maps"].to(device=device, dtype=torch.float32))
        else:
            img = batch_images(batch, device)
            with torch.no_grad():
                maps = net.encoder_maps(img)
            feat = net.img_proj_layer(maps)
        out = model(img, k_in["left"].float().to(device), k_in["right"].float().to(device), img_feat=feat)
        pred = {"left": out.left_mm, "right": out.right_mm}
        target = {s: k_gt[s].to(device) for s in HAND_SIDES}
        mcp = HALO_MIDDLE_MCP
        root_err = {s: pred[s][:, mcp].double() - target[s][:, mcp] for s in HAND_SIDES}
        if self.cfg.kpts_loss == "mpjpe":  # the evaluation's metric itself (mm, not mm^2)
            loss = sum(losses.mpjpe_mm(pred[s].double(), target[s]) for s in HAND_SIDES)
            root = sum(torch.linalg.norm(e, dim=-1).mean() for e in root_err.values())
        else:
            loss = losses.keypoint_mse_mm(pred, target)
            root = sum(torch.mean(e**2) for e in root_err.values())
        total = loss + self.cfg.root_weight * root
        with torch.no_grad():
            err = np.mean([float(losses.mpjpe_mm(pred[s].double(), target[s])) for s in HAND_SIDES])
            err_in = np.mean([float(losses.mpjpe_mm(k_in[s], k_gt[s])) for s in HAND_SIDES])
        return total, {
            "loss": total.item(),
            "mse": loss.item(),
            "root": root.item(),
            "mpjpe": err,
            "mpjpe_in": err_in,
        }


RECIPES: dict[str, type[Recipe]] = {
    "halo": HaloRecipe,
    "init": InitRecipe,
    "ref": RefRecipe,
    "kpts": KptsRecipe,
}


def make_recipe(cfg: TrainConfig, out_dir: str | Path) -> Recipe:
    return RECIPES[cfg.network](cfg, Path(out_dir))


def describe(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
