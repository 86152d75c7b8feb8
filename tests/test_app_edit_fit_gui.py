"""Edit > Keep bone lengths plausible (the skeleton fit for editing) in the running app, on
and off: "Add hand" in a box and a 2D joint drag (stand-in engine, Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from test_app_fakes import FakeEngine
from test_app_gui import drag, make_window, wait_final, write_sample

from core.detect import hand_prior as HP
from core.hand.joints import MANO_PARENTS

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("needs_x_server")]
_CHILDREN = np.arange(1, 21)
_PARENTS = np.array(MANO_PARENTS[1:])


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    w = make_window(qtbot, tmp_path, monkeypatch, FakeEngine(stage_delay_s=0.02))
    image_path, keypoints_path = write_sample(tmp_path)
    assert w.open_path(image_path) and w.load_keypoints(keypoints_path)
    wait_final(qtbot, w)
    return w


def _bones(hand: np.ndarray) -> np.ndarray:
    return np.linalg.norm(hand[_CHILDREN] - hand[_PARENTS], axis=1)


def _add_left_in_box(window) -> np.ndarray:
    window.doc.remove_hand("left")
    window._add_hand("left")
    drag(window.image_view, np.array([20.0, 40.0]), np.array([100.0, 160.0]))
    return window.doc.active_keypoints().left


def test_the_option_is_on_by_default_and_switchable_from_the_hands_panel(window):
    assert window.skeleton_fit_action.isCheckable() and window.skeleton_fit_action.isChecked()
    window.skeleton_fit_action.trigger()
    assert not window.skeleton_fit_action.isChecked()


def test_the_hands_panel_shows_every_button_label_whole(window, qtbot):
    """The panel's buttons carry the actions' short labels; none is cut to "..." at the
    window's usual size (the fit's full menu text was)."""
    from PySide6.QtWidgets import QToolButton

    window.resize(1400, 850)
    qtbot.wait(50)
    buttons = window.settings_panel.findChildren(QToolButton)
    labelled = {b.defaultAction(): b for b in buttons if b.defaultAction() is not None}
    fit_button = labelled[window.skeleton_fit_action]
    assert fit_button.text() == "Plausible bone lengths" and fit_button.isCheckable()
    assert "Keep bone lengths" in window.skeleton_fit_action.text()  # the menu keeps the long text
    for button in labelled.values():  # Qt reports an elided label as the button's text
        assert "..." not in button.text() and "\u2026" not in button.text(), button.text()
        needed = button.fontMetrics().horizontalAdvance(button.text())
        assert needed < button.width() - 6, (button.text(), needed, button.width())


@pytest.mark.parametrize("fit_on", [True, False])
def test_add_hand_in_a_box_with_and_without_the_fit(window, qtbot, fit_on):
    window.skeleton_fit_action.setChecked(fit_on)
    left = _add_left_in_box(window)
    uv = window.doc.camera_for_frame().project(left)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    assert np.all(lo > [20.0 - 8, 40.0 - 8]) and np.all(hi < [100.0 + 8, 160.0 + 8])
    assert (hi - lo).max() > 0.85 * 120
    length = np.linalg.norm(left[9] - left[0]) + _bones(left)[9:12].sum()  # wrist-middle MCP + finger
    if fit_on:  # the anthropometric mean hand: its length and Buchholz's index proximal phalanx
        assert length == pytest.approx(HP.HAND_LENGTH_MEAN_M, rel=0.05)
        assert _bones(left)[5] == pytest.approx(0.245 * HP.HAND_LENGTH_MEAN_M, rel=0.12)
    else:  # the template, with its own proportions (a 40 mm index proximal phalanx)
        assert _bones(left)[5] == pytest.approx(0.040, abs=1e-6)
    wait_final(qtbot, window)


@pytest.mark.parametrize("fit_on", [True, False])
def test_a_2d_drag_with_and_without_the_fit(window, qtbot, fit_on):
    window.skeleton_fit_action.setChecked(fit_on)
    doc = window.doc
    before = doc.active_keypoints().right.copy()
    start = window.image_view.handle_pixel("right", 8)  # the index fingertip, dragged 40 px away
    target = start + np.array([40.0, 25.0])
    drag(window.image_view, start, target)
    after = doc.active_keypoints().right
    uv = doc.camera_for_frame().project(after)
    assert np.linalg.norm(uv[8] - target) < 2.5
    np.testing.assert_allclose(window.image_view.handle_pixel("right", 8), uv[8], atol=1e-6)
    stretch = _bones(after)[7] / _bones(before)[7]  # the distal phalanx (joint 7 -> 8)
    if fit_on:  # the finger bends and turns; its tip bone keeps a plausible length
        assert 0.75 < stretch < 1.33
        assert np.linalg.norm(after[7] - before[7]) > 0.003  # the rest of the finger followed
    else:  # only the tip moved: its bone is stretched far beyond any hand's
        assert stretch > 2.0
        np.testing.assert_array_equal(np.delete(after, 8, axis=0), np.delete(before, 8, axis=0))
    assert doc.undo_stack.count() == 2  # load + one drag
    doc.undo_stack.undo()
    np.testing.assert_array_equal(doc.active_keypoints().right, before)
    wait_final(qtbot, window)
