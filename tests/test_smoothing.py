import numpy as np

from core.detect.smoothing import OneEuroFilter, TwoHandSmoother
from core.types import TwoHandKeypoints


def test_one_euro_reduces_jitter_on_a_still_noisy_track():
    rng = np.random.default_rng(0)
    t = np.arange(200) / 30.0
    noisy = 0.5 + rng.normal(0, 0.01, size=(200, 3))
    f = OneEuroFilter(min_cutoff_hz=1.0, beta=0.0)
    out = np.array([f(x, ti) for x, ti in zip(noisy, t, strict=True)])
    raw_jitter = np.std(np.diff(noisy[50:], axis=0))
    smooth_jitter = np.std(np.diff(out[50:], axis=0))
    assert smooth_jitter < 0.2 * raw_jitter
    assert np.abs(out[50:].mean(axis=0) - 0.5).max() < 0.005


def test_one_euro_follows_a_step_faster_with_beta():
    t = np.arange(60) / 30.0
    x = np.where(t < 1.0, 0.0, 0.3)[:, None]
    slow = OneEuroFilter(min_cutoff_hz=1.0, beta=0.0)
    fast = OneEuroFilter(min_cutoff_hz=1.0, beta=20.0)
    ys = np.array([slow(xi, ti) for xi, ti in zip(x, t, strict=True)])[:, 0]
    yf = np.array([fast(xi, ti) for xi, ti in zip(x, t, strict=True)])[:, 0]
    after = t >= 1.0
    # 10 frames after the step the adaptive filter is much closer to the new value
    assert abs(yf[after][10] - 0.3) < 0.5 * abs(ys[after][10] - 0.3)
    assert abs(yf[-1] - 0.3) < 0.01 and abs(ys[-1] - 0.3) < 0.05


def test_smoother_carries_a_missing_hand_then_drops_it():
    hand = np.zeros((21, 3)) + [0.0, 0.0, 0.5]
    sm = TwoHandSmoother(max_carry_frames=2)
    sm(TwoHandKeypoints(left=hand, right=None), 0.0)
    out1 = sm(TwoHandKeypoints(left=None, right=None), 1 / 30)
    assert out1.left is not None and sm.carried["left"]
    np.testing.assert_allclose(out1.left, hand)
    sm(TwoHandKeypoints(left=None, right=None), 2 / 30)
    out3 = sm(TwoHandKeypoints(left=None, right=None), 3 / 30)
    assert out3.left is None and out3.right is None


def test_smoother_restarts_after_a_jump():
    sm = TwoHandSmoother()
    a = np.zeros((21, 3)) + [0.0, 0.0, 0.5]
    b = a + [0.5, 0.0, 0.0]  # 50 cm jump: a different hand, not motion
    sm(TwoHandKeypoints(left=None, right=a), 0.0)
    out = sm(TwoHandKeypoints(left=None, right=b), 1 / 30)
    np.testing.assert_allclose(out.right, b)
