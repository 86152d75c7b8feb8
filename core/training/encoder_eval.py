"""2D accuracy of an image encoder on synthetic renders (no augmentation).

``python -m core.training.encoder_eval --weights ENCODER.safetensors --data SYNTH_DIR [--limit N]
[--json PATH]``

* **Joints**: heatmap read-out (:func:`core.models.heatmap_readout.heatmap_peaks`) against the
  projected ground truth, for every joint inside the 256 px crop: mean error in crop pixels,
  and PCK at 0.05 of the hand's box (the longer side of its ground-truth joints' 2D box).
* **Masks**: each hand's mask logits upsampled to the crop, thresholded at 0.5, against the
  render's labels: IoU over the whole split (summed intersections / summed unions), per hand.
* **Dense**: mean L1 of the canonical coordinates on each hand's own pixels (64 px maps).
* ``--flip-test``: the maps averaged with those of the mirrored crop
  (:mod:`core.models.flip_test`).
* **Side swaps** (a diagnostic): the share of joints read nearer the *other* hand's joint of
  the same name than their own, i.e. how much of the error is left and right confused rather
  than a joint badly placed on its own hand; and the mean error of the joints that are not.
* **Behind the other hand** (a diagnostic): the share of joints whose pixel the render labels
  as the other hand (hidden by it), and the mean error of those and of the rest: how much of
  the error is joints that the image cannot show.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import InputError
from core.hand.joints import HAND_SIDES
from core.io.atomic import write_text_atomic
from core.models.flip_test import flip_averaged
from core.models.heatmap_readout import heatmap_peaks, soft_argmax
from core.models.image_encoder import normalize_image
from core.models.registry import load_image_encoder
from core.training.encoder_targets import HAND_LABELS, map_targets, map_to_crop
from core.training.encoder_training import cached_item, sample_files

PCK_FRACTION = 0.05
SOFT_ARGMAX_BETA = 20.0  # as EncoderTrainConfig.coord_beta


def load_encoder(path: str | Path) -> torch.nn.Module:
    """An encoder saved by the encoder training (our safetensors format), in eval mode."""
    return load_image_encoder(path)


@dataclass
class EncoderScores:
    samples: int
    joints: int  # joints inside the crop, scored
    joint_error_px: float
    joint_median_px: float
    pck: float  # at 0.05 of the hand box
    mask_iou_left: float
    mask_iou_right: float
    dense_l1: float
    soft_argmax_error_px: float = float("nan")  # the training's soft-argmax read-out instead
    swapped_share: float = float("nan")  # joints nearer the other hand's same joint
    unswapped_error_px: float = float("nan")  # mean error of the other joints
    behind_share: float = float("nan")  # joints whose pixel shows the other hand
    behind_error_px: float = float("nan")  # their mean error
    in_view_error_px: float = float("nan")  # mean error of the other joints

    @property
    def mask_iou(self) -> float:
        return 0.5 * (self.mask_iou_left + self.mask_iou_right)

    def table(self) -> str:
        return "\n".join(
            [
                "| samples | joints | 2D error (px) | median (px) | PCK@0.05 box "
                "| mask IoU L / R / mean | dense L1 | soft-argmax 2D error (px) "
                "| side-swapped joints | error of the others (px) "
                "| behind the other hand | their error / the others' (px) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
                f"| {self.samples} | {self.joints} | {self.joint_error_px:.2f} "
                f"| {self.joint_median_px:.2f} | "
                f"{100 * self.pck:.1f} % | {100 * self.mask_iou_left:.1f} / "
                f"{100 * self.mask_iou_right:.1f} / {100 * self.mask_iou:.1f} % | {self.dense_l1:.3f} "
                f"| {self.soft_argmax_error_px:.2f} | {100 * self.swapped_share:.1f} % "
                f"| {self.unswapped_error_px:.2f} | {100 * self.behind_share:.1f} % "
                f"| {self.behind_error_px:.2f} / {self.in_view_error_px:.2f} |",
            ]
        )


def hand_box_sizes(joints_uv: np.ndarray) -> np.ndarray:
    """(42,) the longer side of each joint's hand 2D box (left joints 0-20, right 21-41)."""
    sizes = [np.ptp(joints_uv[k * 21 : (k + 1) * 21], axis=0).max() for k in range(2)]
    return np.repeat(sizes, 21)


def behind_other_hand(joints_uv: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(42,) True where a joint's pixel (rounded, clipped to the image) is labelled as the
    *other* hand in the render's label image: the other hand hides it (left joints 0-20)."""
    h, w = labels.shape
    px = np.rint(np.nan_to_num(joints_uv)).astype(np.int64)
    u, v = np.clip(px[:, 0], 0, w - 1), np.clip(px[:, 1], 0, h - 1)
    other = np.repeat([HAND_LABELS["right"], HAND_LABELS["left"]], 21)
    return labels[v, u] == other


@torch.no_grad()
def evaluate_encoder(
    encoder: torch.nn.Module, files: list[Path], batch_size: int = 8, sigma: float = 1.5,
    flip_test: bool = False,
) -> EncoderScores:
    errors, within, soft_errors, swapped, behind = [], [], [], [], []
    inter, union = np.zeros(2), np.zeros(2)
    dense_sum, dense_weight = 0.0, 0.0
    for start in range(0, len(files), batch_size):
        items = [cached_item(f, None) for f in files[start : start + batch_size]]
        size = items[0].image.shape[0]
        images = normalize_image(torch.from_numpy(np.stack([it.image for it in items])))
        out = flip_averaged(encoder, images) if flip_test else encoder(images)
        xy, _ = heatmap_peaks(out.hms)
        soft_xy = soft_argmax(out.hms, SOFT_ARGMAX_BETA)
        masks = F.interpolate(out.mask, size=(size, size), mode="bilinear", align_corners=False) > 0
        for b, item in enumerate(items):
            uv = map_to_crop(xy[b].numpy(), size)
            target = map_targets(item, sigma)
            err = np.linalg.norm(uv - item.joints_uv, axis=1)
            inside = target.joint_inside
            errors.append(err[inside])
            other_hand = np.roll(item.joints_uv, 21, axis=0)  # each joint's namesake on the other hand
            swapped.append((np.linalg.norm(uv - other_hand, axis=1) < err)[inside])
            behind.append(behind_other_hand(item.joints_uv, item.labels)[inside])
            soft = np.linalg.norm(map_to_crop(soft_xy[b].numpy(), size) - item.joints_uv, axis=1)
            soft_errors.append(soft[inside])
            within.append((err <= PCK_FRACTION * hand_box_sizes(item.joints_uv))[inside])
            for k, side in enumerate(HAND_SIDES):
                truth = item.labels == HAND_LABELS[side]
                pred = masks[b, k].numpy()
                inter[k] += np.logical_and(truth, pred).sum()
                union[k] += np.logical_or(truth, pred).sum()
            weight = np.repeat(target.masks, 3, axis=0)
            dense_sum += float((np.abs(out.dp[b].numpy() - target.dense) * weight).sum())
            dense_weight += float(weight.sum())
    errors_all, swapped_all = np.concatenate(errors), np.concatenate(swapped)
    behind_all = np.concatenate(behind)
    mean_or_nan = lambda a: float(a.mean()) if a.size else float("nan")
    iou = inter / np.maximum(union, 1)
    return EncoderScores(
        samples=len(files),
        joints=int(errors_all.size),
        joint_error_px=float(errors_all.mean()),
        joint_median_px=float(np.median(errors_all)),
        pck=float(np.concatenate(within).mean()),
        mask_iou_left=float(iou[0]),
        mask_iou_right=float(iou[1]),
        dense_l1=dense_sum / max(dense_weight, 1.0),
        soft_argmax_error_px=float(np.concatenate(soft_errors).mean()),
        swapped_share=float(swapped_all.mean()),
        unswapped_error_px=mean_or_nan(errors_all[~swapped_all]),
        behind_share=float(behind_all.mean()),
        behind_error_px=mean_or_nan(errors_all[behind_all]),
        in_view_error_px=mean_or_nan(errors_all[~behind_all]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.training.encoder_eval", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--weights", type=Path, required=True, help="image_encoder.safetensors")
    parser.add_argument("--data", type=Path, required=True, help="synth folder (e.g. seed 1234, 200 samples)")
    parser.add_argument("--limit", type=int, default=None, help="first N samples")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flip-test", action="store_true",
                        help="average the maps with those of the mirrored crop (sides swapped back)")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args(argv)
    try:
        torch.set_num_threads(args.threads)
        scores = evaluate_encoder(load_encoder(args.weights), sample_files(args.data, args.limit),
                                  flip_test=args.flip_test)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(scores.table())
    if args.json:
        write_text_atomic(args.json, json.dumps(asdict(scores) | {"mask_iou": scores.mask_iou}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
