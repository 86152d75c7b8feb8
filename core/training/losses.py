"""Training losses of the reference recipes (../shared/reference/official_code.md §A.3.4,
§A.4.2, §D.3), as pure functions of tensors."""

from __future__ import annotations

import torch

from core.hand.joints import HALO_MIDDLE_MCP


def occupancy_mse(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over hands of MSE(predicted probability, ground-truth occupancy) -- the loss of I,
    of R's data term and of the HALO baseline (mean over batch and points, per hand)."""
    return sum(torch.mean((pred[s] - target[s].to(pred[s].dtype)) ** 2) for s in pred)


def penetration_sum(
    own_left: torch.Tensor, right_at_left: torch.Tensor, own_right: torch.Tensor, left_at_right: torch.Tensor
) -> torch.Tensor:
    """P = sum over batch and points of o_L(x_L) * o_R(x_L) + o_R(x_R) * o_L(x_R): large where
    both hands claim the same point. A **sum**, not a mean, as in the reference."""
    return (own_left * right_at_left).sum() + (own_right * left_at_right).sum()


def weighted_occupancy_mse(
    pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor], pos_weight: float = 1.0
) -> torch.Tensor:
    """:func:`occupancy_mse` with the errors at inside points (target 1) weighted by
    ``pos_weight`` (ours, R): the minimiser is then q = w p / (w p + 1 - p) for a true inside
    probability p, i.e. the engine's fixed level (0.45) sits at a lower p. With w = 1 this is
    :func:`occupancy_mse`. The weighted errors are divided by the mean weight, which keeps the
    loss on the scale of the plain MSE."""
    total = 0.0
    for s in pred:
        t = target[s].to(pred[s].dtype)
        w = 1.0 + (pos_weight - 1.0) * t
        total = total + torch.sum(w * (pred[s] - t) ** 2) / torch.sum(w)
    return total


def ref_occ_loss(
    out: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    pen_weight: float = 0.001,
    pos_weight: float = 1.0,
    start: dict[str, torch.Tensor] | None = None,
    start_weight: float = 0.0,
    start_point_weight: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """R's loss: MSE on both hands + ``pen_weight`` x :func:`penetration_sum` (``out`` holds
    ``left``, ``right``, ``right_at_left``, ``left_at_right`` as RefOccNet.forward(pen=True)).

    Ours (defaults = the reference): ``pos_weight`` != 1 weights the inside points
    (:func:`weighted_occupancy_mse`); ``start`` (each hand's occupancy of the network R starts
    from) with ``start_weight`` = s makes the data term (1 - s) MSE(gt) + s MSE(start), which
    keeps R near its start wherever the penetration term does not pull."""
    sides = ("left", "right")
    pred = {s: out[s] for s in sides}
    mse = weighted_occupancy_mse(pred, target, pos_weight)  # = occupancy_mse when pos_weight is 1
    pen = penetration_sum(out["left"], out["right_at_left"], out["right"], out["left_at_right"])
    parts = {"mse": mse.item(), "pen": pen.item()}
    data = mse
    if start is not None and start_weight > 0:
        keep = 0.0
        for k, target_k in start.items():
            err = (out[k] - target_k.detach()) ** 2
            if start_point_weight is None:
                keep = keep + err.mean()
            else:
                w = start_point_weight[k]
                keep = keep + (w * err).sum() / w.sum()
        data = (1.0 - start_weight) * mse + start_weight * keep
        parts["keep"] = keep.item()
    return data + pen_weight * pen, parts


def centred_joints_mm(joints_halo_mm: torch.Tensor) -> torch.Tensor:
    """(B, 21, 3) ``halo`` order -> relative to each hand's middle MCP (halo joint 4)."""
    return joints_halo_mm - joints_halo_mm[:, HALO_MIDDLE_MCP : HALO_MIDDLE_MCP + 1]


def keypoint_mse_mm(pred: dict[str, torch.Tensor], gt: dict[str, torch.Tensor]) -> torch.Tensor:
    """K's loss: per hand MSE between middle-MCP-centred prediction and ground truth (mm,
    ``halo`` order), summed over hands, computed in float64 as the reference does."""
    return sum(
        torch.mean((centred_joints_mm(pred[s].double()) - centred_joints_mm(gt[s].double())) ** 2)
        for s in pred
    )


def mpjpe_mm(pred_mm: torch.Tensor, gt_mm: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error (mm) after centring each hand at its middle MCP
    (the reference's ``jpe``), over all leading dimensions; inputs (..., 21, 3) ``halo``."""
    p = pred_mm - pred_mm[..., HALO_MIDDLE_MCP : HALO_MIDDLE_MCP + 1, :]
    g = gt_mm - gt_mm[..., HALO_MIDDLE_MCP : HALO_MIDDLE_MCP + 1, :]
    return torch.linalg.norm(p - g, dim=-1).mean()
