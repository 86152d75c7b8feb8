"""Recipe of the keypoints-only HALO baseline (the "HALO" row): HALO base decoder, MSE on
probabilities, Adam 1e-4 in the reference. Trained on our synthetic data from scratch
(xavier-normal init)."""

from __future__ import annotations

from torch import nn

from core.hand.joints import HAND_SIDES
from core.models.config import HALO_BASE_DECODER
from core.models.halo_base import HaloBaseNet
from core.models.init_occ import init_weights_official
from core.training import losses
from core.training.datasets import ItemSpec
from core.training.recipes.base import Recipe, batch_targets, halo_inputs_from_joints, occupancy_iou


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
        target = batch_targets(batch, device)
        loss = losses.occupancy_mse(pred, target)
        return loss, {"loss": loss.item(), "iou": occupancy_iou(pred, target, 0.5)}


RECIPE = HaloRecipe
