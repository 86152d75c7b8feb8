"""Recipe of network K: Adam 1e-4, MSE on middle-MCP-centred joints in mm (the reference). The
image encoder is I's (frozen, shared). ``root_weight`` > 0 adds an MSE on each hand's middle
MCP position in K's frame (ours; the reference leaves the global position unsupervised, which
lets the refined hands drift apart and changes the image crop and the penetration between
hands)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.errors import TrainConfigError
from core.hand.joints import HALO_MIDDLE_MCP, HAND_SIDES
from core.models.init_occ import init_weights_official
from core.models.kpts_ref import KeypointRefiner
from core.models.registry import load_network
from core.synth.detector_noise import DetectorNoise
from core.training import losses
from core.training.datasets import ItemSpec
from core.training.netconfigs import kpts_ref_config
from core.training.recipes.base import Recipe, batch_images, kpts_frame_mm, share_encoder_from_init, unwrap

# K's tensors that belong to its image encoder side: the encoder and the 1x1 projection of
# its maps (the projection's input width is the encoder's).
ENCODER_SIDE_PREFIXES = ("image_encoder.", "img_proj_layer.")


@dataclass(frozen=True)
class KptsOptions:
    """Network K's own options."""

    root_weight: float = 0.0  # weight of the middle-MCP position term (0 = reference loss)
    renoise: bool = False  # synthetic data: fresh noisy keypoints per item and epoch (ours)
    identity_init: bool = False  # start as the identity of the input keypoints (ours; identity_init_kpts_ref)
    # folder of cached image feature maps (relative to --out; built on first use; ours, for a
    # CPU budget; see core.training.feature_cache)
    feature_cache: str | None = None
    # with feature_cache: cache the encoder's maps before K's 1x1 projection (2.6 MB per sample
    # instead of 512 KiB) so that the projection trains as without a cache (ours)
    cache_encoder_maps: bool = False
    # the network's dropout during training (None = the network default, 0.01 as the
    # reference). Ours: at 0.01 a dropped channel of K's identity path loses a whole
    # coordinate (tens of mm), which doubled K's training loss; inference never drops.
    dropout: float | None = None
    # "mse" (reference: MSE of middle-MCP-centred joints, mm^2) or "mpjpe" (ours: their mean
    # Euclidean error in mm, the evaluation's metric; less pulled by rare large errors such as
    # swapped fingers). The root term follows: squared resp. plain distance of each middle MCP.
    kpts_loss: str = "mse"
    # the skeleton graph of K's GCN layers: "undirected" (ours, default: every joint can
    # average its noise against its neighbours) or "directed" (the reference's parent->child
    # matrix, with which each joint only sees its descendants; see core.models.gcn)
    kpts_graph: str = "undirected"
    # Detector-like keypoint errors on synthetic data, beside the jitter (ours; on by default
    # from issue #13 on): whole-hand depth offset and scale along the camera ray, rotation,
    # swapped and collapsed fingers; magnitudes measured on the detector pipeline
    # (core.synth.detector_noise.DetectorNoise, docs/detection.md "Detector-like keypoint
    # noise"). A JSON object of DetectorNoise's keys; {"enabled": false} switches it off.
    # InterHand2.6M data (real detections) never gets it.
    detector_noise: DetectorNoise = field(default_factory=DetectorNoise)

    def __post_init__(self) -> None:
        if isinstance(self.detector_noise, dict):
            try:
                object.__setattr__(self, "detector_noise", DetectorNoise.from_dict(self.detector_noise))
            except (TypeError, ValueError) as exc:
                raise TrainConfigError(f"kpts options: {exc}") from None
        elif not isinstance(self.detector_noise, DetectorNoise):
            raise TrainConfigError(
                f"detector_noise must be an object of DetectorNoise keys, got {self.detector_noise!r}"
            )
        if self.kpts_loss not in ("mse", "mpjpe"):
            raise TrainConfigError(f"kpts_loss must be 'mse' or 'mpjpe', got {self.kpts_loss!r}")
        if self.kpts_graph not in ("directed", "undirected"):
            raise TrainConfigError(f"kpts_graph must be 'directed' or 'undirected', got {self.kpts_graph!r}")
        if self.cache_encoder_maps and not self.feature_cache:
            raise TrainConfigError("cache_encoder_maps needs a feature_cache folder")


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
    Options = KptsOptions

    def frozen_prefixes(self) -> tuple[str, ...]:
        # With a cache of projected features the projection after the encoder is frozen too
        # (its output is what the cache holds); otherwise it trains, as in the reference.
        projected = bool(self.opts.feature_cache) and not self.opts.cache_encoder_maps
        return ("image_encoder.", "img_proj_layer.") if projected else ("image_encoder.",)

    def cache_content(self) -> str:
        from core.training import feature_cache as fc

        return fc.MAPS_KEY if self.opts.cache_encoder_maps else fc.CACHED_KEY

    def item_spec(self) -> ItemSpec:
        # K sees the crop the engine makes around the keypoints it is given (the noisy ones).
        # Real detections (InterHand2.6M) already carry the detector's errors.
        synthetic = not (isinstance(self.cfg.data, dict) and self.cfg.data.get("kind") == "interhand")
        noise = self.opts.detector_noise if synthetic and self.opts.detector_noise.enabled else None
        if self.opts.feature_cache:  # the crops' feature maps come from the cache
            return ItemSpec(points_per_hand=1, seed=self.cfg.seed, crop_with="none", needs_image=False,
                            renoise=self.opts.renoise, detector_noise=noise)  # fmt: skip
        return ItemSpec(points_per_hand=1, seed=self.cfg.seed, crop_with="noisy", renoise=self.opts.renoise,
                        detector_noise=noise)  # fmt: skip

    def prepare_dataset(self, dataset, model, device):
        """With ``feature_cache``: items carry the cached (projected or pre-projection) map of
        their sample's stored-keypoint crop (built here on first use; see
        core.training.feature_cache)."""
        if not self.opts.feature_cache:
            return dataset
        return self.with_feature_cache(
            dataset, model, device, self.opts.feature_cache, self.cache_content(), crop_with="noisy"
        )

    def model_config(self):
        return kpts_ref_config(self.encoder_spec(), self.opts.dropout, self.opts.kpts_graph == "undirected")

    def build(self) -> nn.Module:
        net = KeypointRefiner(self.model_config())
        net.apply(init_weights_official)
        init = load_network(self.init_path()) if self.cfg.init_from else None
        if isinstance(init, KeypointRefiner):  # fine-tuning an earlier K: all of its weights
            if self.opts.identity_init:
                raise TrainConfigError("identity_init would overwrite the K weights given in init_from")
            if init.cfg.undirected_graph != net.cfg.undirected_graph:
                kind = "undirected" if init.cfg.undirected_graph else "directed"
                raise TrainConfigError(
                    f"the K in init_from runs a {kind} skeleton graph; "
                    f"set \"kpts_graph\": \"{kind}\" to fine-tune it"
                )
            if self.on_campaign_encoder(init):
                net.load_state_dict(init.state_dict())  # an earlier K on this encoder: go on
            elif self.cfg.encoder_tuned_from_init:  # its own encoder, fine-tuned: swap it alone
                net.load_state_dict(init.state_dict())
                self.start_from_campaign_encoder(net)
            elif self.start_from_campaign_encoder(net):
                # A new encoder under an earlier K: its keypoint layers carry over; the encoder
                # comes from encoder_from and the 1x1 projection of the encoder's maps (whose
                # width changed) starts afresh.
                keep = {k: v for k, v in init.state_dict().items() if not k.startswith(ENCODER_SIDE_PREFIXES)}
                missing, unexpected = net.load_state_dict(keep, strict=False)
                if unexpected or any(not k.startswith(ENCODER_SIDE_PREFIXES) for k in missing):
                    raise TrainConfigError(f"the K in init_from does not fit: {unexpected or missing}")
            else:
                net.load_state_dict(init.state_dict())
        elif self.start_from_campaign_encoder(net):  # the encoder campaign's weights
            pass
        elif init is not None:  # I (or R's I): the shared encoder only
            share_encoder_from_init(net, init, final_layer=False)
        net.image_encoder.requires_grad_(False)
        if self.opts.identity_init:
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
        # projection is frozen; see frozen_prefixes).
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
        if self.opts.kpts_loss == "mpjpe":  # the evaluation's metric itself (mm, not mm^2)
            loss = sum(losses.mpjpe_mm(pred[s].double(), target[s]) for s in HAND_SIDES)
            root = sum(torch.linalg.norm(e, dim=-1).mean() for e in root_err.values())
        else:
            loss = losses.keypoint_mse_mm(pred, target)
            root = sum(torch.mean(e**2) for e in root_err.values())
        total = loss + self.opts.root_weight * root
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


RECIPE = KptsRecipe
