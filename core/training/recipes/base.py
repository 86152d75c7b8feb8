"""What every recipe shares: the :class:`Recipe` interface (build the network and initialise
it from earlier stages, name the items it needs, the optimiser and schedule, the loss of one
batch) and the batch helpers (pure functions of tensors).

Reference values (../shared/reference/official_code.md §A.3.4, §A.4.2, §A.5) and where
ours differ are in each network's module: :mod:`.halo`, :mod:`.init`, :mod:`.ref`, :mod:`.kpts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from core.checkpoints import save_checkpoint
from core.errors import TrainConfigError
from core.geometry.canonical import canonicalize_two_hands, halo_base_inputs
from core.hand.joints import HAND_SIDES, convert_joints
from core.models.config import EncoderConfig
from core.models.image_encoder import normalize_image
from core.models.init_occ import HandInputs, InitOccNet
from core.models.registry import load_image_encoder
from core.training.datasets import ItemSpec
from core.training.recipes.config import TrainConfig


@dataclass(frozen=True)
class NoOptions:
    """A network without options of its own."""


def hand_inputs_from_joints(left: torch.Tensor, right: torch.Tensor, device) -> dict[str, HandInputs]:
    """Camera-frame keypoints (B, 21, 3) of both hands -> I/R inputs (camera R = I, T = 0),
    as the engine builds them for one hand (:meth:`HandInputs.from_camera_frame`)."""
    halo = canonicalize_two_hands(left.double().cpu(), right.double().cpu(), validate=False)
    joints = {"left": left, "right": right}
    return {
        s: HandInputs.from_camera_frame(halo[s], joints[s][:, 0].double().cpu(), device) for s in HAND_SIDES
    }


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


def batch_points(batch: dict, device) -> dict[str, torch.Tensor]:
    return {s: batch[f"points_{s}"].to(device) for s in HAND_SIDES}


def batch_targets(batch: dict, device) -> dict[str, torch.Tensor]:
    return {s: batch[f"occ_{s}"].to(device) for s in HAND_SIDES}


@dataclass(frozen=True)
class OccupancyBatch:
    """What I and R read from a batch of training items, on the device."""

    images: torch.Tensor | None  # (B, 3, 256, 256) normalised crops (None: items carry cached maps)
    hands: dict[str, HandInputs]
    points: dict[str, torch.Tensor]  # side -> (B, N, 3) canonical query points
    targets: dict[str, torch.Tensor]  # side -> (B, N) ground-truth occupancy


def occupancy_batch(batch: dict, device) -> OccupancyBatch:
    return OccupancyBatch(
        images=batch_images(batch, device) if "image" in batch else None,
        hands=hand_inputs_from_joints(batch["joints_left"], batch["joints_right"], device),
        points=batch_points(batch, device),
        targets=batch_targets(batch, device),
    )


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


def share_encoder_from_init(dst: nn.Module, init: InitOccNet, final_layer: bool) -> None:
    """Copy I's image encoder (and optionally its 1x1 final layer) into ``dst``."""
    with torch.no_grad():
        dst.image_encoder.load_state_dict(init.image_encoder.state_dict())
        if final_layer:
            dst.image_final_layer.load_state_dict(init.image_final_layer.state_dict())


@dataclass
class Recipe:
    """How one network trains; ``cfg.options`` is an instance of the subclass's ``Options``."""

    cfg: TrainConfig
    out_dir: Path

    network_name: ClassVar[str] = ""  # the network's name in core.models.registry
    _campaign_encoder: nn.Module | None = field(default=None, init=False, repr=False)
    Options: ClassVar[type] = NoOptions

    @property
    def opts(self):
        """This network's own options (``cfg.options``)."""
        return self.cfg.options

    def frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes whose parameters never train."""
        return ()

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

    def encoder_spec(self) -> str | EncoderConfig:
        """What the networks' image encoder is built from: the stored config of the campaign
        encoder in ``encoder_from``, else the ``backbone`` name (a ResNetSimple)."""
        if not self.cfg.encoder_from:
            return self.cfg.backbone
        return self.campaign_encoder().cfg

    def campaign_encoder(self) -> nn.Module:
        """The encoder named by ``encoder_from`` (loaded once per recipe)."""
        if self._campaign_encoder is None:
            path = self.config_path(self.cfg.encoder_from)
            if not path.is_file():
                raise TrainConfigError(f"encoder_from weights not found: {path} (train encoder first)")
            self._campaign_encoder = load_image_encoder(path)
        return self._campaign_encoder

    def on_campaign_encoder(self, net: nn.Module) -> bool:
        """Whether ``net`` (an earlier stage) already holds exactly the ``encoder_from``
        encoder, so that all of its weights can carry over."""
        if not self.cfg.encoder_from:
            return False
        mine, theirs = net.image_encoder.state_dict(), self.campaign_encoder().state_dict()
        return mine.keys() == theirs.keys() and all(
            mine[n].shape == t.shape and torch.equal(mine[n], t) for n, t in theirs.items()
        )

    def start_from_campaign_encoder(self, net: nn.Module) -> bool:
        """Copy the ``encoder_from`` weights into ``net.image_encoder``; False when unset."""
        if not self.cfg.encoder_from:
            return False
        with torch.no_grad():
            net.image_encoder.load_state_dict(self.campaign_encoder().state_dict())
        return True

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
            if p.requires_grad and not n.startswith(self.frozen_prefixes())
        ]

    def prepare_dataset(self, dataset, model: nn.Module, device):
        """The dataset the loop reads, given the built model (a recipe may wrap it)."""
        return dataset

    def with_feature_cache(
        self, dataset, model: nn.Module, device, folder: str, content: str, crop_with: str
    ):
        """``dataset`` whose items carry the cached ``content`` map of their sample's crop
        (``crop_with``, draw 0) instead of an image. The cache in ``folder`` (relative to the
        run's folder) is built on first use, and rebuilt when the encoder or the sample
        count changed (see core.training.feature_cache)."""
        from core.training import feature_cache as fc
        from core.training.datasets import dataset_from_spec

        net = unwrap(model)
        path = self.config_path(folder)
        if not fc.cache_matches(path, net, len(dataset), content):
            crops = ItemSpec(points_per_hand=1, seed=self.cfg.seed, crop_with=crop_with)
            crop_items = dataset_from_spec(self.cfg.data, crops)
            fc.build_feature_cache(net, crop_items, path, content=content, device=device)
        return fc.CachedFeatureDataset(dataset, fc.FeatureCache(path, net, len(dataset), content))

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.trainable(model), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def scheduler(self, opt: torch.optim.Optimizer):
        step = self.cfg.lr_step if self.cfg.lr_step > 0 else 10**9
        return torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=self.cfg.lr_gamma)

    def loss(self, model: nn.Module, batch: dict, device) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def export(self, model: nn.Module, path: Path, metadata: dict) -> Path:
        return save_checkpoint(path, model, self.network_name, config=self.model_config(), metadata=metadata)
