"""The synthetic-render evaluation (core/detect/evaluate_synth.py): reading `main.py synth`
samples and the detector-free placement check."""

import cv2
import numpy as np
import pytest

from core.detect import skeleton_model as M
from core.detect.evaluate_synth import lift_only, load_synth_frames


def _write_sample(folder, name: str, seed: int, drop: str | None = None) -> None:
    """Two skeleton-model hands of one size, side by side 0.5 m away, as `main.py synth` stores them."""
    rng = np.random.default_rng(seed)
    fields = {"camera_K": np.array([[500.0, 0, 128], [0, 500.0, 128], [0, 0, 1]]),
              "image_size": np.array([256, 256])}  # fmt: skip
    for side, x in (("left", 0.06), ("right", -0.06)):
        p = np.zeros(M.NUM_PARAMS)
        p[M.SCALE] = 0.03
        p[M.ANGLES] = rng.uniform(0.0, 0.5, size=20)
        p[M.ROT] = (np.pi, 0.0, 0.0)
        p[3:6] = (x / 0.5, 0.05, np.log(0.5 + rng.uniform(-0.03, 0.03)))
        fields[f"joints_{side}"] = M.camera_joints(p, side)[0]
    if drop:
        fields.pop(drop)
    np.savez(folder / f"{name}.npz", **fields)
    cv2.imwrite(str(folder / f"{name}.png"), np.zeros((256, 256, 3), np.uint8))


def test_lift_only_places_two_clean_hands_and_reports_the_root_vector(tmp_path):
    for i in range(3):
        _write_sample(tmp_path, f"{i:04d}", seed=i)
    frames = load_synth_frames(tmp_path)
    assert len(frames) == 3 and frames[0].camera.width == 256
    report = lift_only(frames, noise_px=1.0)
    assert report["frames"] == 3
    # 1 px noise on hands of the prior's size +3 %: the pair's placement is right to a few cm
    assert report["root_vector_error_mm_median"] < 30
    assert report["mpjpe_mm_mean"] < 12
    assert report["root_vector_depth_error_mm_median"] <= report["root_vector_error_mm_median"]


def test_a_sample_without_its_joints_is_named(tmp_path):
    _write_sample(tmp_path, "0001", seed=1, drop="joints_right")
    with pytest.raises(ValueError, match=r"0001.npz: missing field 'joints_right'"):
        load_synth_frames(tmp_path)
    with pytest.raises(FileNotFoundError, match="no \\*.npz"):
        load_synth_frames(tmp_path / "nothing")
