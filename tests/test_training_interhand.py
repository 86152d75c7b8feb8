"""The InterHand2.6M dataset class on a small folder written in the reference layout."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from core.training.datasets import DatasetError, InterHandDataset, ItemSpec, dataset_from_spec


def _write_ply(path, points):
    header = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\n"
    header += "property float z\nend_header\n"
    path.write_text(header + "\n".join(" ".join(f"{v:.6f}" for v in p) for p in points) + "\n")


@pytest.fixture
def interhand(tmp_path):
    from core.synth.samples import SynthConfig, generate_sample

    s = generate_sample(3, SynthConfig(n_uniform=50, n_surface=50))
    img_root, occ_root = tmp_path / "img", tmp_path / "occ"
    split = img_root / "test"
    for d in ("img", "anno", "pred_joints", "gt_joints"):
        (split / d).mkdir(parents=True)
    (occ_root / "test" / "points").mkdir(parents=True)
    cv2.imwrite(str(split / "img" / "0.jpg"), s.image[..., ::-1])
    # world = camera rotated by 90 deg about z and shifted: x_cam = R x_world + t
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    t = np.array([0.1, -0.2, 0.3])
    anno = {"camera": {"R": R.tolist(), "t": t.tolist(), "camera": np.asarray(s.camera.K).tolist()},
            "image": {"capture": 7, "frame_idx": 42}}  # fmt: skip
    (split / "anno" / "0.json").write_text(json.dumps(anno))
    for side in ("left", "right"):
        world = (s.keypoints.hand(side) - t) @ R  # R^T (x - t)
        _write_ply(split / "gt_joints" / f"0000000_{side}.ply", world)
        _write_ply(split / "pred_joints" / f"0000000_{side}.ply", world + 0.005)
        occ = s.occupancy[side]
        np.savez(
            occ_root / "test" / "points" / f"7_42_{side}.npz",
            points=occ.points_canon_norm.astype(np.float16),
            occupancies=np.packbits(occ.occupancy),
        )
    return img_root, occ_root, s


def test_interhand_items_follow_the_reference_layout(interhand):
    img_root, occ_root, s = interhand
    ds = InterHandDataset(img_root, occ_root, "test", ItemSpec(points_per_hand=0, crop_with="none"))
    assert len(ds) == 1
    item = ds[(0, 0)]
    assert item["image"].shape == (3, 256, 256)
    for side in ("left", "right"):
        # keypoints back in the camera frame (ply stores 6 decimals: 1e-6 m)
        assert torch.allclose(item[f"joints_{side}"], torch.as_tensor(s.keypoints.hand(side)), atol=2e-6)
        offset = (item[f"noisy_joints_{side}"] - item[f"joints_{side}"]).norm(dim=-1)  # 5 mm/axis
        assert torch.allclose(offset, torch.full((21,), 0.005 * 3**0.5, dtype=torch.float64), atol=1e-5)
        assert torch.equal(item[f"occ_{side}"].bool(), torch.as_tensor(s.occupancy[side].occupancy))
        # float16 storage + the reference's 1e-4 symmetry-breaking noise
        diff = item[f"points_{side}"] - torch.as_tensor(s.occupancy[side].points_canon_norm)
        assert diff.abs().max() < 2e-3
    same = dataset_from_spec(
        {"kind": "interhand", "img_root": str(img_root), "occ_root": str(occ_root), "split": "test"},
        ItemSpec(points_per_hand=16),
    )[(0, 1)]
    assert same["points_left"].shape == (16, 3)


def test_interhand_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="InterHand2.6M folder missing"):
        InterHandDataset(tmp_path, tmp_path, "train")
