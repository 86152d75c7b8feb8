"""Recipe of network R: Adam 1e-4, weight decay 1e-5, StepLR(5000, 0.2) stepped per iteration,
batch 2, 2048 points/hand in the reference; loss = MSE + 0.001 x penetration sum (the ``pen``
path). R's image encoder starts from I's, as in the reference; ours stays **frozen and
shared** with I (one encoder shipped, one encoder pass per image). Anchors: ground-truth
surface + noise (see :func:`core.training.datasets.sample_anchors`).

Ours, for a CPU budget (``ref_cache``, the shipped recipe): R starts from an earlier R (its I
and frozen parts), its decoder tail starts as the identity of I's occupancy and is the only
part that trains, on cached inputs computed the way the engine runs R (anchors on I's
iso-surface); the data term mixes the ground truth (inside points weighted) with R's identity
output where I's overlaps are resolved for the more confident hand (see RefRecipe).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from core.checkpoints import read_checkpoint_info
from core.errors import TrainConfigError
from core.hand.joints import HAND_SIDES
from core.models.init_occ import InitOccNet
from core.models.ref_occ import RefOccNet
from core.models.registry import load_network
from core.training import losses
from core.training.datasets import ItemSpec
from core.training.netconfigs import ref_occ_config
from core.training.recipes.base import Recipe, occupancy_batch, occupancy_iou, share_encoder_from_init, unwrap


@dataclass(frozen=True)
class RefOptions:
    """Network R's own options."""

    num_anchors: int = 512  # anchors per hand
    pen_weight: float = 0.001  # weight of the penetration term
    contact_fraction: float = 0.0  # share of query points from the contact set (ours; 0 = reference)
    identity_init: bool = False  # start as the identity of I's occupancy (ours; identity_init_ref_decoder)
    # folder of cached frozen decoder inputs (relative to --out; built on first use; ours, for
    # a CPU budget): R then trains its decoder's MLP tail only, on anchors taken from I's
    # surface as the engine takes them (see core.training.ref_cache)
    ref_cache: str | None = None
    # with ref_cache: share of the samples cached with I and R run on the stored noisy
    # keypoints (ours; see core.training.ref_cache.RefCacheSpec.noisy_share)
    noisy_share: float = 0.0
    # global gradient-norm clip of the trained parameters (0 = none; ours)
    grad_clip: float = 0.0
    # weight of the errors at inside points in the data term (1 = reference MSE; ours, see
    # core.training.losses.weighted_occupancy_mse)
    pos_weight: float = 1.0
    # with ref_cache: share of the data term taken against R's identity start
    # sigmoid(12 (o_I - t)) instead of the ground truth (ours; a regulariser that keeps R at I's
    # level set except where the penetration term asks otherwise; 0 = ground truth only)
    identity_weight: float = 0.0
    # with identity_weight: the start target of a hand is zero where the other hand's I
    # occupancy is above 0.5 and above its own (I's overlaps resolved in favour of the more
    # confident hand), and the target also applies at the other hand's points (ours)
    resolve_overlap: bool = False
    # with resolve_overlap: weight of the points where that target differs from the identity
    # (the overlaps are rare; ours)
    overlap_point_weight: float = 1.0


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
    Options = RefOptions

    def frozen_prefixes(self) -> tuple[str, ...]:
        return ("init_occ.", "image_encoder.")

    def item_spec(self) -> ItemSpec:
        return ItemSpec(
            points_per_hand=self.cfg.points_per_hand,
            num_anchors=self.opts.num_anchors,
            seed=self.cfg.seed,
            crop_with="gt",
            contact_fraction=self.opts.contact_fraction,
        )

    def model_config(self):
        cfg = ref_occ_config(self.encoder_spec())
        if self.cfg.init_from and self._start_has_pixel_feature():
            cfg = dataclasses.replace(cfg, init_occ=dataclasses.replace(cfg.init_occ, pixel_feature=True))
        return cfg

    def _start_has_pixel_feature(self) -> bool:
        """Whether the I that R starts from (an I, or the I inside an earlier R) has
        ``pixel_feature``: R's config then holds it too (read from the file's header)."""
        info = read_checkpoint_info(self.init_path())
        config = info.config or {}
        config = config.get("init_occ", {}) if info.network == "ref_occ" else config
        return bool(config.get("pixel_feature", False))

    def cache_spec(self):
        from core.training.ref_cache import RefCacheSpec

        return RefCacheSpec(
            points_per_hand=self.cfg.points_per_hand,
            contact_fraction=self.opts.contact_fraction,
            seed=self.cfg.seed,
            noisy_share=self.opts.noisy_share,
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
        if self.opts.identity_init:
            with torch.no_grad():
                identity_init_ref_decoder(net)
        return net

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        if self.opts.ref_cache:
            from core.training.ref_cache import tail_parameters

            return tail_parameters(model)
        return super().trainable(model)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        kwargs = dict(lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        if self.opts.grad_clip > 0:
            return ClippedAdam(self.trainable(model), self.opts.grad_clip, **kwargs)
        return torch.optim.Adam(self.trainable(model), **kwargs)

    def prepare_dataset(self, dataset, model, device):
        """With ``ref_cache``: items are the cached decoder inputs of their sample (built here on
        first use). A tail still at its identity initialisation gets its data-dependent scaling
        (:func:`core.training.ref_cache.normalise_tail_init`) from the first 16 samples."""
        if not self.opts.ref_cache:
            return dataset
        from core.training import ref_cache as rc

        net = unwrap(model)
        folder = self.config_path(self.opts.ref_cache)
        spec = self.cache_spec()
        if not rc.cache_matches(folder, net, spec, len(dataset)):
            rc.build_ref_cache(net, dataset, folder, spec, device=device)
        cached = rc.RefCacheDataset(rc.RefCache(folder, net), len(dataset))
        if self.opts.identity_init and identity_tail_untouched(net):
            first = [cached[i] for i in range(min(16, len(cached)))]
            stack = lambda k: torch.stack([it[k] for it in first]).float().to(device)
            rc.normalise_tail_init(net, stack("attended"), stack("pixel"), stack("occ_init"))
        return cached

    def loss(self, model, batch, device):
        ref: RefOccNet = unwrap(model)
        if "attended" in batch:
            return self._cached_loss(ref, batch, device)
        ref.image_encoder.eval()  # frozen and shared: BatchNorm on running statistics
        b = occupancy_batch(batch, device)
        cam_K = batch["camera_K"].to(device)
        anchors = {s: batch[f"anchors_{s}_mm"].to(device) for s in HAND_SIDES}
        features = ref.encode_image(b.images, shared_encoder=True, cam_K=cam_K)
        out = ref.occupancies(features, b.hands, cam_K, b.points, anchors, pen=True)
        target = b.targets
        loss, parts = losses.ref_occ_loss(out, target, self.opts.pen_weight)
        pred = {s: out[s] for s in HAND_SIDES}
        return loss, {"loss": loss.item(), **parts, "iou": occupancy_iou(pred, target, 0.45)}

    def _cached_loss(self, ref: RefOccNet, batch: dict, device):
        from core.training import ref_cache as rc

        f32 = dict(device=device, dtype=torch.float32)
        occ_init = batch["occ_init"].to(**f32)  # (B, 2 decoders, 2 point sets, M)
        logits = rc.tail_logits(ref, batch["attended"].to(**f32), batch["pixel"].to(**f32), occ_init)
        out = rc.split_by_role(torch.sigmoid(logits))
        target = {s: batch["occ_gt"][:, i].to(**f32) for i, s in enumerate(HAND_SIDES)}
        opts = self.opts
        start = point_weight = None
        if opts.identity_weight > 0:
            identity = identity_ref_occupancy(occ_init)
            if opts.resolve_overlap:  # the target also applies at the other hand's points
                loses = overlap_losers(occ_init).to(identity.dtype)
                start = rc.split_by_role(identity * (1.0 - loses))
                point_weight = rc.split_by_role(1.0 + (opts.overlap_point_weight - 1.0) * loses)
            else:
                start = {s: v for s, v in rc.split_by_role(identity).items() if s in HAND_SIDES}
        loss, parts = losses.ref_occ_loss(
            out, target, opts.pen_weight, opts.pos_weight, start, opts.identity_weight, point_weight
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


RECIPE = RefRecipe
