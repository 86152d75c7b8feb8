"""Recipe of network I: MSE on probabilities, batch 8, 4096 points/hand in the reference, Adam
**1e-5** there because its decoders start from the HALO baseline and its encoder from
IntagHand. Our image encoder starts from scratch, so we use Adam 1e-4 (``lr`` in the config);
the decoders start from our HALO baseline, with the 19 image columns of layer 2 set to zero so
that I starts exactly at HALO. Depth reference: the wrist (order-independent)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import TrainConfigError
from core.hand.joints import HAND_SIDES
from core.models.init_occ import PIXEL_PROJECTIONS, InitOccNet, init_weights_official, zero_pixel_projections
from core.models.ref_occ import RefOccNet
from core.models.registry import load_network
from core.training import losses
from core.training.datasets import ItemSpec
from core.training.input_noise import InputNoise, NoisyInputItems
from core.training.netconfigs import init_occ_config
from core.training.recipes.base import Recipe, occupancy_batch, occupancy_iou, unwrap


@dataclass(frozen=True)
class InitOptions:
    """Network I's own options (both ours)."""

    # keep the (randomly initialised) image encoder's weights fixed and train the rest; its
    # BatchNorm statistics still adapt to the data (for a CPU budget; see InitRecipe.build)
    freeze_encoder: bool = False
    # start every weight except the two decoders -- image encoder with its BatchNorm
    # statistics, attention, projections -- from this earlier I (or an R holding one, packed
    # files too), and keep the encoder's statistics fixed while training, so that the encoder
    # that R and K share stays bit-identical. The decoders still come from init_from (HALO).
    init_keep_from: str | None = None
    # folder of cached encoder maps (relative to --out; built on first use; ours, for a CPU
    # budget): I reads only cat(hms_fmaps[-1], dp_fmaps[-1]) of its encoder, a constant of the
    # ground-truth crop while the encoder is frozen, so it is computed once per sample
    # (core.training.feature_cache, 1 MiB per sample at fmap_dim 64). Needs freeze_encoder;
    # the encoder then runs on its stored BatchNorm statistics.
    feature_cache: str | None = None
    # std of the image-feature columns of the decoders' injection layer after the start
    # (0: as they come; from a HALO or on a new encoder that is zero). Ours: at zero, those
    # columns and the attention behind them get no useful gradient -- measured, the columns
    # stayed at 2e-5 over 3000 iterations and I ignored the image -- so a small random start
    # lets the image path learn from the first step.
    image_columns_std: float = 0.0
    # learning-rate factor of the image path (image_final_layer, img_ex_*), ours
    image_lr_scale: float = 1.0
    # data-dependent start of the image path (ours; normalise_image_path on the first
    # samples' crops). Measured on the run-7 encoder: its smooth maps summed over 16 x 16
    # patches gave tokens of std 280 around a mean of 90, shared by all images, so that
    # the attention's LayerNorms left little of the image (I's 19-d image feature moved by
    # 0.007 when the image was swapped).
    normalise_image_path: bool = False
    # share (0..1) of the items on which I reads jittered keypoints (core.synth.noise at
    # input_noise_level; 1 is the benchmark's ~15 mm) with its query points moved into those
    # hands' frames and their labels kept (core.training.input_noise; ours). At inference I
    # runs on K's output, ~12 mm off; on the truth alone it has no reason to read the image.
    input_noise_share: float = 0.0
    input_noise_level: float = 1.0
    # build I with a pixel-aligned image feature (InitOccConfig.pixel_feature; ours). Its
    # projections start at zero, so an earlier I without them goes on from where it was.
    pixel_feature: bool = False

    def __post_init__(self) -> None:
        InputNoise(self.input_noise_share, self.input_noise_level)  # validates
        if self.feature_cache and not self.freeze_encoder:
            raise TrainConfigError(
                "init feature_cache needs freeze_encoder (the cached maps are the encoder's)"
            )


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


def init_decoders_from_init(net: InitOccNet, earlier: InitOccNet, zero_image_columns: bool) -> int:
    """Copy an earlier I's two decoders into ``net``. With ``zero_image_columns`` the image
    feature's columns of the injection layer start at zero: a new image encoder makes the
    earlier columns meaningless, and at zero I starts as the earlier I's image-free part.
    Returns #tensors."""
    state = {k: v for k, v in earlier.state_dict().items() if k.split(".", 1)[0] in _DECODERS}
    net.load_state_dict(state, strict=False)
    if zero_image_columns:
        for column in image_columns(net):
            column.zero_()
    return len(state)


def load_earlier_init(net: InitOccNet, earlier: InitOccNet) -> None:
    """All of an earlier I's weights into ``net``; only ``pixel_feature``'s projections may be
    missing from it (they then keep their zero start)."""
    missing, unexpected = net.load_state_dict(earlier.state_dict(), strict=False)
    bad = [k for k in missing if k.split(".", 1)[0] not in PIXEL_PROJECTIONS.values()] + list(unexpected)
    if bad:
        raise TrainConfigError(f"the earlier network I does not fit this one: {', '.join(bad[:6])}")


NORMALISE_SAMPLES = 16  # crops that set the image path's start (normalise_image_path)


@torch.no_grad()
def normalise_image_path(net: InitOccNet, maps: torch.Tensor) -> None:
    """Shift and scale ``image_final_layer`` and each side's patch projection
    (``img_ex_*.encoder.proj``) so that, on these encoder maps (B, C, 64, 64), every output
    channel has zero mean and unit spread: the image tokens then vary with the image instead
    of sharing one large component (ours; a data-dependent start, like R's tail)."""

    def normalise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        y = conv(x)
        mean, std = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3)).clamp_min(1e-6)
        conv.weight.div_(std.view(-1, 1, 1, 1))
        conv.bias.copy_((conv.bias - mean) / std)
        return conv(x)

    fmap = normalise(net.image_final_layer, maps)
    for side in HAND_SIDES:
        normalise(getattr(net, f"img_ex_{side}").encoder.proj, fmap)


def image_columns(net: InitOccNet) -> list[torch.Tensor]:
    """Views of the image-feature columns of both decoders' injection layers (all parts)."""
    cfg = net.cfg.decoder
    return [
        getattr(getattr(net, name), f"lin{b}_{cfg.add_feature_layer_idx}").weight[:, -cfg.add_feature_dim :]
        for name in _DECODERS
        for b in range(cfg.num_bones)
    ]


_DECODERS = tuple(f"{side}_decoder" for side in HAND_SIDES)


class InitRecipe(Recipe):
    network_name = "init_occ"
    Options = InitOptions

    def item_spec(self) -> ItemSpec:
        if self.opts.feature_cache:  # the crops' maps come from the cache
            # with pixel_feature the items need the ground-truth crop's intrinsics (cropping the
            # black stand-in image gives them); otherwise nothing of the crop is read
            crop_with = "gt" if self.opts.pixel_feature else "none"
            return ItemSpec(points_per_hand=self.cfg.points_per_hand, seed=self.cfg.seed, crop_with=crop_with,
                            needs_image=False)  # fmt: skip
        return ItemSpec(points_per_hand=self.cfg.points_per_hand, seed=self.cfg.seed, crop_with="gt")

    def prepare_dataset(self, dataset, model, device):
        if self.opts.feature_cache:
            from core.training.feature_cache import MAPS_KEY

            cache = self.opts.feature_cache
            dataset = self.with_feature_cache(dataset, model, device, cache, MAPS_KEY, crop_with="gt")
        noise = InputNoise(self.opts.input_noise_share, self.opts.input_noise_level)
        if noise.enabled:
            dataset = NoisyInputItems(dataset, noise, unwrap(model).cfg.global_scale)
        return dataset

    def model_config(self):
        config = init_occ_config(self.encoder_spec())
        return dataclasses.replace(config, pixel_feature=self.opts.pixel_feature)

    def build(self) -> nn.Module:
        net = InitOccNet(self.model_config())
        net.apply(init_weights_official)
        if net.cfg.pixel_feature:
            zero_pixel_projections(net)
        if self.opts.init_keep_from:
            path = self.config_path(self.opts.init_keep_from)
            earlier = load_network(path)
            earlier = earlier.init_occ if isinstance(earlier, RefOccNet) else earlier
            if not isinstance(earlier, InitOccNet):
                raise TrainConfigError(f"init_keep_from must hold network I (or R); {path} does not")
            load_earlier_init(net, earlier)
        if self.start_from_campaign_encoder(net) and self.opts.init_keep_from:
            raise TrainConfigError("encoder_from and init_keep_from both set I's encoder: choose one")
        if self.cfg.init_from:
            start = load_network(self.init_path())
            start = start.init_occ if isinstance(start, RefOccNet) else start
            with torch.no_grad():
                if isinstance(start, InitOccNet) and self.on_campaign_encoder(start):
                    load_earlier_init(net, start)  # an earlier I on this encoder: go on
                elif isinstance(start, InitOccNet) and self.cfg.encoder_tuned_from_init:
                    load_earlier_init(net, start)  # its own encoder, fine-tuned: swap it alone
                    self.start_from_campaign_encoder(net)
                elif isinstance(start, InitOccNet):  # an earlier I's decoders
                    init_decoders_from_init(net, start, zero_image_columns=bool(self.cfg.encoder_from))
                else:
                    init_decoders_from_halo(net, start.state_dict())
        if self.opts.normalise_image_path:
            normalise_image_path(net, self.first_maps(net, NORMALISE_SAMPLES))
        if self.opts.image_columns_std > 0:
            with torch.no_grad():
                for column in image_columns(net):
                    column.normal_(0.0, self.opts.image_columns_std)
        if self.opts.freeze_encoder:
            # No gradients through the ResNet (two thirds of a step on a CPU); in train mode its
            # BatchNorm layers still track the data's statistics, which R and K inherit.
            net.image_encoder.requires_grad_(False)
        return net

    @torch.no_grad()
    def first_maps(self, net: InitOccNet, n: int) -> torch.Tensor:
        """I's encoder maps of the ground-truth crops of the first ``n`` training samples."""
        from core.models.image_encoder import normalize_image
        from core.training.datasets import dataset_from_spec

        spec = ItemSpec(points_per_hand=1, seed=self.cfg.seed, crop_with="gt")
        crops = dataset_from_spec(self.cfg.data, spec)
        images = torch.stack([crops[(i, 0)]["image"] for i in range(min(n, len(crops)))])
        was_training = net.image_encoder.training
        net.image_encoder.eval()
        try:
            return net.encoder_maps(normalize_image(images))
        finally:
            net.image_encoder.train(was_training)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        if self.opts.image_lr_scale == 1.0:
            return super().optimizer(model)
        image_path = ("image_final_layer.", "img_ex_", *(name + "." for name in PIXEL_PROJECTIONS.values()))
        params = [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if not n.startswith(image_path)]},
            {"params": [p for n, p in params if n.startswith(image_path)],
             "lr": self.cfg.lr * self.opts.image_lr_scale},
        ]  # fmt: skip
        return torch.optim.Adam(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def loss(self, model, batch, device):
        # The encoder stays as it is; a frozen campaign encoder is shared with K as it is, so
        # its BatchNorm statistics must not drift either (packing checks the two are equal).
        frozen_campaign = bool(self.cfg.encoder_from) and self.opts.freeze_encoder
        if self.opts.init_keep_from or self.opts.feature_cache or frozen_campaign:
            unwrap(model).image_encoder.eval()
        b = occupancy_batch(batch, device)
        cam_K = batch["camera_K"].to(device) if unwrap(model).cfg.pixel_feature else None
        if "encoder_maps" in batch:
            maps = batch["encoder_maps"].to(device=device, dtype=torch.float32)
            pred = model(None, b.hands, b.points, chunk_size=None, encoder_maps=maps, cam_K=cam_K)
        else:
            pred = model(b.images, b.hands, b.points, chunk_size=None, cam_K=cam_K)
        target = b.targets
        loss = losses.occupancy_mse(pred, target)
        return loss, {"loss": loss.item(), "iou": occupancy_iou(pred, target, 0.5)}


RECIPE = InitRecipe
