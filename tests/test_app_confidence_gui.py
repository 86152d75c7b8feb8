"""Per-joint detector confidence in the running app (stand-in engine, Xvfb): weak joints are
coloured in 2D and 3D, the confidence survives save / reopen, and a joint the user moved is
no longer flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox
from test_app_fakes import FakeEngine
from test_app_gui import drag, make_window, wait_final, write_sample

from app.colors import HAND_COLORS, WEAK_JOINT_COLOR, rgb01
from app.detection import DetectedFrame

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("needs_x_server")]


@pytest.fixture
def detected_window(qtbot, tmp_path, monkeypatch):
    """The sample's hands "detected" with low confidence on the right index tip (joint 8)
    and the left thumb tip (joint 4); the rest confident, the left wrist without a value."""
    window = make_window(qtbot, tmp_path, monkeypatch, FakeEngine(stage_delay_s=0.02))
    image_path, keypoints_path = write_sample(tmp_path)
    assert window.open_path(image_path) and window.load_keypoints(keypoints_path)
    wait_final(qtbot, window)
    hands = window.doc.active_keypoints().copy()
    confidence = np.full((2, 21), 0.9)
    confidence[1, 8], confidence[0, 4], confidence[0, 0] = 0.2, 0.45, np.nan
    monkeypatch.setattr("app.detection.detect_hands", lambda image, camera: DetectedFrame(hands, confidence))
    count = window.doc.undo_stack.count()
    QTest.keySequence(window, "Ctrl+D")
    qtbot.waitUntil(lambda: window.doc.undo_stack.count() == count + 1, timeout=5000)
    wait_final(qtbot, window)
    return window, confidence


def _expected_weak() -> np.ndarray:
    weak = np.zeros((2, 21), dtype=bool)
    weak[1, 8] = weak[0, 4] = True
    return weak


def test_weak_joints_are_coloured_in_2d_and_3d(detected_window):
    window, _ = detected_window
    np.testing.assert_array_equal(window.image_view.weak_joints(), _expected_weak())
    weak_pen = window.image_view.handle("right", 8).pen()
    assert weak_pen.color().getRgb()[:3] == WEAK_JOINT_COLOR
    assert window.image_view.handle("right", 7).pen().color().getRgb()[:3] != WEAK_JOINT_COLOR
    layer = window.scene_view.keypoints
    assert layer.sphere_color("right", 8) == pytest.approx(rgb01(WEAK_JOINT_COLOR))
    assert layer.sphere_color("left", 4) == pytest.approx(rgb01(WEAK_JOINT_COLOR))
    assert layer.sphere_color("right", 7) == pytest.approx(rgb01(HAND_COLORS["right"]))
    assert layer.sphere_color("left", 0) == pytest.approx(rgb01(HAND_COLORS["left"]))  # NaN: not weak
    assert "2 weak joints" in window.statusBar().currentMessage()


def test_confidence_survives_save_and_reopen(detected_window, tmp_path):
    window, confidence = detected_window
    assert window.save_as(tmp_path / "session")
    saved = json.loads((tmp_path / "session.im2hands.json").read_text())
    assert saved["frames"][0]["confidence"]["right"][8] == pytest.approx(0.2)
    assert saved["frames"][0]["confidence"]["left"][0] is None
    window.doc.undo_stack.undo()  # the detection undone: no confidence
    assert window.doc.annotation().confidence is None
    assert not window.image_view.weak_joints().any()
    window.unsaved_answer = QMessageBox.StandardButton.Discard
    assert window.open_path(tmp_path / "session.im2hands.json")
    np.testing.assert_allclose(window.doc.annotation().confidence, confidence, atol=1e-4)
    np.testing.assert_array_equal(window.image_view.weak_joints(), _expected_weak())
    assert window.scene_view.keypoints.sphere_color("right", 8) == pytest.approx(rgb01(WEAK_JOINT_COLOR))


def test_a_joint_the_user_moved_is_no_longer_weak_and_undo_brings_it_back(detected_window, qtbot):
    window, _ = detected_window
    start = window.image_view.handle_pixel("right", 8)
    drag(window.image_view, start, start + np.array([12.0, -8.0]))
    weak = window.image_view.weak_joints()
    assert not weak[1, 8] and weak[0, 4]
    assert np.isnan(window.doc.annotation().confidence[1, 8])
    assert window.scene_view.keypoints.sphere_color("right", 8) == pytest.approx(rgb01(HAND_COLORS["right"]))
    window.doc.undo_stack.undo()
    assert window.image_view.weak_joints()[1, 8]
    window.doc.swap_hands()  # the rows follow the hands
    assert window.image_view.weak_joints()[0, 8] and window.image_view.weak_joints()[1, 4]
    wait_final(qtbot, window)
