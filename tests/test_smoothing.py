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


def _hand_at(wrist):
    # a 21-joint "hand": the wrist plus joints fanning 1-9 cm from it (only positions matter here)
    offsets = np.linspace(0.01, 0.09, 20)[:, None] * np.array([1.0, 0.3, 0.0])
    return np.vstack([wrist, np.asarray(wrist) + offsets])


def test_smoother_undoes_a_detector_label_swap_between_two_tracked_hands():
    sm = TwoHandSmoother()
    t = np.arange(10) / 30.0
    left_w = [np.array([-0.08 + 0.001 * i, 0.0, 0.5]) for i in range(10)]
    right_w = [np.array([0.08 - 0.001 * i, 0.0, 0.5]) for i in range(10)]
    for i in range(6):
        out = sm(TwoHandKeypoints(left=_hand_at(left_w[i]), right=_hand_at(right_w[i])), t[i])
        assert not sm.relabelled
    # frame 6: the detector swaps the labels of the two hands
    out = sm(TwoHandKeypoints(left=_hand_at(right_w[6]), right=_hand_at(left_w[6])), t[6])
    assert sm.relabelled
    assert np.linalg.norm(out.left[0] - left_w[6]) < 0.01 and np.linalg.norm(out.right[0] - right_w[6]) < 0.01
    # and the next correct frame is taken as it is
    sm(TwoHandKeypoints(left=_hand_at(left_w[7]), right=_hand_at(right_w[7])), t[7])
    assert not sm.relabelled


def test_smoother_gives_a_mislabelled_lone_hand_its_tracked_side():
    sm = TwoHandSmoother()
    left_w, right_w = np.array([-0.08, 0.0, 0.5]), np.array([0.08, 0.0, 0.5])
    for i in range(5):  # both tracks established
        sm(TwoHandKeypoints(left=_hand_at(left_w), right=_hand_at(right_w)), i / 30)
    # the right hand is lost and the left one is labelled "right" by the detector
    out = sm(TwoHandKeypoints(left=None, right=_hand_at(left_w + [0.005, 0.0, 0.0])), 5 / 30)
    assert sm.relabelled
    assert np.linalg.norm(out.left[0] - left_w) < 0.01
    assert sm.carried["right"] and np.linalg.norm(out.right[0] - right_w) < 1e-9
    # a lone hand near its own track keeps its label
    out = sm(TwoHandKeypoints(left=None, right=_hand_at(right_w)), 6 / 30)
    assert not sm.relabelled and np.linalg.norm(out.right[0] - right_w) < 0.01
    # with tracking off, the detector's labels are kept
    plain = TwoHandSmoother(track_sides=False)
    plain(TwoHandKeypoints(left=_hand_at(left_w), right=_hand_at(right_w)), 0.0)
    out = plain(TwoHandKeypoints(left=_hand_at(right_w), right=_hand_at(left_w)), 1 / 30)
    assert not plain.relabelled and np.linalg.norm(out.left[0] - right_w) < 1e-9  # 16 cm: filter restarted


def test_smoother_drops_a_short_track_that_was_the_same_hand_mislabelled():
    """Two frames labelled left, then the same hand labelled right (the detector settled):
    the short left track is dropped, not carried over as a ghost next to the right hand."""
    sm = TwoHandSmoother()
    w = np.array([0.0, 0.0, 0.5])
    sm(TwoHandKeypoints(left=_hand_at(w), right=None), 0.0)
    sm(TwoHandKeypoints(left=_hand_at(w), right=None), 1 / 30)
    out = sm(TwoHandKeypoints(left=None, right=_hand_at(w + [0.003, 0.0, 0.0])), 2 / 30)
    assert not sm.relabelled and out.left is None and not sm.carried["left"]
    assert np.linalg.norm(out.right[0] - w) < 0.01
