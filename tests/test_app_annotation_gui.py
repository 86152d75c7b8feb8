"""Annotation features in the running app (stand-in engine, Xvfb): review keys and the
timeline, visibility states, hand-scale edits, Add hand by box, K ghosts, undo that jumps,
the reconstruction cache and cancel, the help sheet, one meaning per key."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from test_app_fakes import FakeEngine
from test_app_gui import drag, make_window, wait_final, write_sample
from test_app_session import shoot

from app.annotation import EDITED, INTERPOLATED, NOT_ANNOTATED, OCCLUDED, OUTSIDE, REVIEWED, VISIBLE
from app.colors import STATE_COLORS
from core.geometry.pose_interpolation import bone_lengths
from core.types import TwoHandKeypoints

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("needs_x_server")]


@pytest.fixture
def opened(qtbot, tmp_path, monkeypatch):
    engine = FakeEngine(stage_delay_s=0.02)
    window = make_window(qtbot, tmp_path, monkeypatch, engine)
    image_path, keypoints_path = write_sample(tmp_path)
    assert window.open_path(image_path) and window.load_keypoints(keypoints_path)
    wait_final(qtbot, window)
    return window, engine


@pytest.fixture
def folder_window(qtbot, tmp_path, monkeypatch):
    """Six 160x120 frames; frame 0 has the sample's hands."""
    engine = FakeEngine(stage_delay_s=0.01)
    window = make_window(qtbot, tmp_path, monkeypatch, engine)
    image_path, keypoints_path = write_sample(tmp_path)
    folder = tmp_path / "frames"
    folder.mkdir()
    image = cv2.imread(str(image_path))
    for i in range(6):
        cv2.imwrite(str(folder / f"f{i}.png"), image)
    assert window.open_path(folder)
    kps = window.doc.camera_for_frame(0)
    from core.io.keypoints import load_keypoints

    hands, _ = load_keypoints(keypoints_path, "image.png")
    window.doc.set_detected_keypoints({0: hands}, kps)
    wait_final(qtbot, window)
    return window, engine


def timeline_color(window, index: int) -> tuple[int, int, int]:
    bar = window.frame_strip.timeline
    image = bar.grab().toImage()
    rect = bar.mark_rect(index)
    color = QColor(image.pixel(int(rect.center().x()), 3))
    return color.red(), color.green(), color.blue()


def test_review_keys_counter_timeline_and_interpolation(folder_window, qtbot):
    window, _ = folder_window
    doc = window.doc
    QTest.keyClick(window, Qt.Key.Key_C)  # copy frame 0 to frame 1, go there
    assert doc.current_frame == 1 and doc.frame_states()[1] == EDITED
    doc.set_current_frame(5)
    doc.set_active_hand(5, "right", doc.active_keypoints(0).right + [0.05, 0.0, 0.02], "move")
    QTest.keyClick(window, Qt.Key.Key_I)  # interpolate frames 2-4 between keyframes 1 and 5
    assert doc.frame_states()[2:5] == [INTERPOLATED] * 3
    for index in (2, 3, 4):
        assert np.abs(bone_lengths(doc.active_keypoints(index).right)
                      - bone_lengths(doc.active_keypoints(1).right)).max() < 1e-3  # fmt: skip
    doc.set_current_frame(3)
    QTest.keyClick(window, Qt.Key.Key_R)
    qtbot.waitUntil(lambda: window.review_label.text() == "reviewed 1 / 6")
    QTest.keyClick(window, Qt.Key.Key_N)
    assert doc.current_frame == 4
    window.resize(1200, 800)
    QApplication.processEvents()
    assert timeline_color(window, 3) == STATE_COLORS[REVIEWED]
    assert timeline_color(window, 2) == STATE_COLORS[INTERPOLATED]
    assert timeline_color(window, 1) == STATE_COLORS[EDITED]
    shoot(window.frame_strip, "timeline_six_frames.png")
    QTest.keyClick(window, Qt.Key.Key_R)
    QTest.keyClick(window, Qt.Key.Key_R)  # R again reopens the frame
    assert not doc.annotation(4).reviewed
    # Undo of an edit on another frame jumps to it first.
    doc.set_current_frame(0)
    QTest.keySequence(window, "Ctrl+Z")
    assert doc.current_frame == 4


def test_visibility_key_cycles_the_selected_joint_in_2d_and_3d(opened, qtbot):
    window, engine = opened
    doc = window.doc
    calls = engine.calls
    uv = window.image_view.handle_pixel("left", 6)
    drag(window.image_view, uv, uv + [3.0, 0.0])  # grab the joint: it is now selected
    wait_final(qtbot, window)
    calls = engine.calls
    codes = []
    for _ in range(3):
        QTest.keyClick(window, Qt.Key.Key_V)
        codes.append(int(doc.annotation().visibility[0, 6]))
    assert codes == [OCCLUDED, OUTSIDE, VISIBLE]
    QTest.keyClick(window, Qt.Key.Key_V)
    assert window.scene_view.keypoints.widgets["left"][6].GetSphereProperty().GetOpacity() < 0.5
    handle = window.image_view.handle("left", 6)
    assert handle.brush().color().alpha() < 255
    wait_final(qtbot, window)
    assert engine.calls == calls, "a visibility change re-ran the reconstruction"
    assert window.controller.cache_hits >= 1


def test_hand_scale_edits_and_depth_wheel(opened, qtbot):
    window, _ = opened
    doc = window.doc
    view = window.image_view
    before = doc.active_keypoints().right.copy()
    uv = view.handle_pixel("right", 12)
    drag(view, uv, uv + [20.0, 10.0], modifiers=Qt.KeyboardModifier.ShiftModifier)
    moved = doc.active_keypoints().right
    shift = moved - before
    assert np.abs(shift - shift[0]).max() < 1e-9 and np.linalg.norm(shift[0]) > 0.01  # rigid translation
    uv = view.handle_pixel("right", 12)
    wrist = view.handle_pixel("right", 0)
    drag(view, uv, wrist + (uv - wrist) * [1.0, 1.0] @ np.array([[0.8, -0.6], [0.6, 0.8]]) * 1.2,
         modifiers=Qt.KeyboardModifier.ControlModifier)  # fmt: skip
    turned = doc.active_keypoints().right
    ratio = bone_lengths(turned) / bone_lengths(moved)
    assert np.allclose(ratio, ratio[0], atol=1e-9) and 1.1 < ratio[0] < 1.3  # rotation + uniform scale
    np.testing.assert_allclose(turned[0], moved[0], atol=1e-12)  # about the wrist
    z = doc.active_keypoints().right[12][2]
    uv_before = view.handle_pixel("right", 12)
    pos = view.mapFromScene(QPointF(*view.handle_pixel("right", 12)))
    wheel = QWheelEvent(QPointF(pos), QPointF(view.viewport().mapToGlobal(pos)), QPointF(0, 0).toPoint(),
                        QPointF(0, 120).toPoint(), Qt.MouseButton.NoButton, Qt.KeyboardModifier.ShiftModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)  # fmt: skip
    QApplication.sendEvent(view.viewport(), wheel)
    assert doc.active_keypoints().right[12][2] == pytest.approx(z + 0.005)
    np.testing.assert_allclose(doc.camera_for_frame().project(doc.active_keypoints().right[12]), uv_before,
                               atol=1e-9)  # along the ray: the pixel stays put  # fmt: skip
    for _ in range(3):  # wheel towards the user: nearer, 5 mm a notch
        QApplication.sendEvent(view.viewport(), QWheelEvent(
            QPointF(pos), QPointF(view.viewport().mapToGlobal(pos)), QPointF(0, 0).toPoint(),
            QPointF(0, -120).toPoint(), Qt.MouseButton.NoButton, Qt.KeyboardModifier.ShiftModifier,
            Qt.ScrollPhase.NoScrollPhase, False))  # fmt: skip
    assert doc.active_keypoints().right[12][2] == pytest.approx(z - 0.010)
    QTest.keySequence(window, "Ctrl+Z")  # the wheel steps on one joint merge into one undo step
    assert doc.active_keypoints().right[12][2] == pytest.approx(z)
    wait_final(qtbot, window)


def test_add_hand_fits_the_template_into_a_dragged_box(opened, qtbot):
    window, _ = opened
    window.skeleton_fit_action.setChecked(False)  # the template (the fit: test_app_edit_fit_gui.py)
    window.doc.remove_hand("left")
    window._add_hand("left")
    assert window.image_view.box_requested() == "left"
    drag(window.image_view, np.array([20.0, 40.0]), np.array([100.0, 160.0]))
    left = window.doc.active_keypoints().left
    uv = window.doc.camera_for_frame().project(left)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    assert np.all(lo > [20.0 - 8, 40.0 - 8]) and np.all(hi < [100.0 + 8, 160.0 + 8])
    assert (hi - lo).max() > 0.85 * 120  # fills the box's larger side
    assert window.image_view.box_requested() is None
    wait_final(qtbot, window)


def test_refined_ghosts_are_drawn_and_accepted_per_hand(opened, qtbot):
    window, _ = opened
    doc = window.doc
    active = doc.active_keypoints()
    refined = TwoHandKeypoints(left=active.left + [0.01, 0, 0], right=active.right + [0, 0.01, 0])
    doc.set_refined(0, refined)
    window._refresh_keypoints()
    assert not window.image_view.ghost_path("left").isEmpty()
    window.image_view.fit()
    shoot(window.image_view, "k_ghosts.png")
    window._accept_refined_hand("left")
    np.testing.assert_allclose(doc.active_keypoints().left, refined.left)
    np.testing.assert_allclose(doc.active_keypoints().right, active.right)
    wait_final(qtbot, window)


def test_revisits_use_the_cache_and_cancel_stops_a_run(qtbot, tmp_path, monkeypatch):
    engine = FakeEngine(stage_delay_s=0.3)
    window = make_window(qtbot, tmp_path, monkeypatch, engine)
    image_path, keypoints_path = write_sample(tmp_path)
    window.open_path(image_path)
    window.load_keypoints(keypoints_path)
    qtbot.waitUntil(window.cancel_button.isVisible, timeout=3000)
    QTest.keyClick(window, Qt.Key.Key_Escape)
    assert not window.controller.pending() and "cancelled" in window.stage_label.text()
    qtbot.waitUntil(lambda: engine.cancelled >= 1, timeout=3000)
    window.controller.schedule(immediate=True)
    wait_final(qtbot, window, timeout_ms=5000)
    calls = engine.calls
    window.controller.schedule(immediate=True)  # same inputs: from the cache
    wait_final(qtbot, window)
    assert engine.calls == calls and window.controller.cache_hits >= 1


def test_help_sheet_hints_and_one_meaning_per_key(qtbot, tmp_path, monkeypatch):
    window = make_window(qtbot, tmp_path, monkeypatch, FakeEngine())
    assert "Ctrl+O" in window.image_view.hint()
    assert window.shortcut_conflicts() == {}
    QTest.keyClick(window, Qt.Key.Key_F1)
    dialog = window.help_dialog
    assert dialog is not None and dialog.isVisible()
    shoot(dialog, "help_sheet.png")
    rows = dict((what, key) for key, what in dialog.rows())
    assert rows["Cycle joint visibility (visible, occluded, outside)"] == "V"
    assert rows["Show joints (keypoints)"] == "J" and rows["Accept refiner's keypoints"] == "A"
    image_path, _ = write_sample(tmp_path)
    window.open_path(image_path)
    assert "Ctrl+D" in window.image_view.hint() and "not annotated yet" in window.image_view.hint()
    assert window.doc.frame_states() == [NOT_ANNOTATED]


def test_meshes_of_every_frame_with_progress(folder_window, qtbot, tmp_path):
    window, _ = folder_window
    window.doc.copy_to_next_frame(0)
    window.doc.copy_to_next_frame(1)
    window.doc.set_reviewed(frames=[1])
    progress = []
    window.worker.jobProgress.connect(lambda done, total: progress.append((done, total)))
    assert window.export_all_meshes(tmp_path / "meshes")
    qtbot.waitUntil(lambda: window.last_mesh_export is not None, timeout=20_000)
    written = window.last_mesh_export.written
    assert sorted({p.parent.name for p in written}) == ["f0", "f1", "f2"]
    assert {p.name for p in written} >= {"left.ply", "right.ply", "manifest.json"}
    assert sorted(p.name for p in (tmp_path / "meshes").iterdir()) == ["f0", "f1", "f2"]  # nothing staged
    assert progress[-1] == (3, 3) and not window.detect_progress.isVisible()
    window.last_mesh_export = None
    assert window.export_all_meshes(tmp_path / "reviewed", only_reviewed=True)
    qtbot.waitUntil(lambda: window.last_mesh_export is not None, timeout=20_000)
    assert {p.parent.name for p in window.last_mesh_export.written} == {"f1"}
    wait_final(qtbot, window)


def display_point(window, xyz: np.ndarray) -> QPointF:
    """Where the 3D view shows camera-frame point ``xyz``, in the interactor widget's Qt
    coordinates (VTK's display y points up)."""
    renderer = window.scene_view.plotter.renderer
    renderer.SetWorldPoint(*map(float, xyz), 1.0)
    renderer.WorldToDisplay()
    x, y, _ = renderer.GetDisplayPoint()
    widget = window.scene_view.plotter
    scale = widget.devicePixelRatioF()
    return QPointF(x / scale, widget.height() - 1 - y / scale)


def drag_3d(window, start: QPointF, end: QPointF, modifiers, steps: int = 5) -> None:
    """A left-button drag on the 3D view through Qt events, as a user makes it: the sphere
    widget under the press picks it up and moves in the view plane."""
    widget = window.scene_view.plotter
    QTest.mousePress(widget, Qt.MouseButton.LeftButton, modifiers, start.toPoint())
    for k in range(1, steps + 1):
        p = start + (end - start) * (k / steps)
        event = QMouseEvent(QEvent.Type.MouseMove, p, widget.mapToGlobal(p), Qt.MouseButton.NoButton,
                            Qt.MouseButton.LeftButton, modifiers)  # fmt: skip
        QApplication.sendEvent(widget, event)
    QTest.mouseRelease(widget, Qt.MouseButton.LeftButton, modifiers, end.toPoint())


def test_hand_scale_drags_in_the_3d_view(opened, qtbot):
    """Shift+drag of a 3D handle moves the whole hand; Ctrl+drag turns and scales it about the
    wrist; each drag is one undo step."""
    window, _ = opened
    doc = window.doc
    window.scene_view.render_now()
    before = doc.active_keypoints().right.copy()
    left = doc.active_keypoints().left.copy()
    start = display_point(window, before[12])
    drag_3d(window, start, start + QPointF(30, -20), Qt.KeyboardModifier.ShiftModifier)
    moved = doc.active_keypoints().right
    shift = moved - before
    assert np.linalg.norm(shift[0]) > 0.005, "the drag did not reach the handle"
    assert np.abs(shift - shift[0]).max() < 1e-9  # every joint by the same vector: rigid
    assert abs(shift[0] @ (before[12] / np.linalg.norm(before[12]))) < 0.2 * np.linalg.norm(shift[0])
    np.testing.assert_array_equal(doc.active_keypoints().left, left)
    np.testing.assert_allclose(window.scene_view.keypoints.handle_center("right", 5), moved[5], atol=1e-6)
    QTest.keySequence(window, "Ctrl+Z")  # one drag, one step
    np.testing.assert_allclose(doc.active_keypoints().right, before, atol=1e-12)
    window.scene_view.render_now()

    wrist = before[0]
    start = display_point(window, before[12])
    end = display_point(window, wrist) + (start - display_point(window, wrist)) * 1.25  # farther out
    drag_3d(window, start, end, Qt.KeyboardModifier.ControlModifier)
    turned = doc.active_keypoints().right
    ratio = bone_lengths(turned) / bone_lengths(before)
    assert np.allclose(ratio, ratio[0], atol=1e-9) and 1.1 < ratio[0] < 1.4  # uniform scale
    np.testing.assert_allclose(turned[0], wrist, atol=1e-12)  # about the wrist
    grabbed = window.scene_view.keypoints.handle_center("right", 12)
    np.testing.assert_allclose(turned[12], grabbed, atol=1e-9)  # the grabbed joint under the mouse
    QTest.keySequence(window, "Ctrl+Z")
    np.testing.assert_allclose(doc.active_keypoints().right, before, atol=1e-12)
    wait_final(qtbot, window)
