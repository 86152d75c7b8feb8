"""The 2D view: the current frame with the 42 keypoints as draggable handles.

Scene coordinates are image pixels (u right, v down, origin at the top-left pixel corner),
so a handle's scene position *is* its pixel position. The view never edits the document:
it reports drags through signals and is told the new positions back.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QAction, QBrush, QColor, QImage, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QMenu,
)

from app.colors import GHOST_COLOR, HAND_COLORS, HIDDEN_JOINT_ALPHA, OUTSIDE_JOINT_ALPHA, WEAK_JOINT_COLOR
from core.hand.joints import HAND_SIDES, MANO_JOINT_NAMES, NUM_JOINTS, bones

HANDLE_RADIUS_PX = 5.0  # on screen, whatever the zoom
_BONES = bones("mano")


def rgb_to_qimage(image_rgb: np.ndarray) -> QImage:
    image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    height, width = image.shape[:2]
    return QImage(image.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


class KeypointHandle(QGraphicsEllipseItem):
    """One draggable joint. Reports position changes to its view while the user drags."""

    def __init__(self, view: ImageView, side: str, joint: int):
        r = HANDLE_RADIUS_PX
        super().__init__(-r, -r, 2 * r, 2 * r)
        self.view = view
        self.side = side
        self.joint = joint
        self.label = f"{side} {MANO_JOINT_NAMES[joint]}"
        flags = (
            QGraphicsItem.GraphicsItemFlag.ItemIsMovable
            | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
            | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges
            | QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations
        )
        self.setFlags(flags)
        self.setAcceptHoverEvents(True)
        self.setToolTip(self.label)
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        self.setZValue(10 + (joint == 0))

    def itemChange(self, change, value):  # noqa: N802 - Qt API name
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            self.view._on_handle_moved(self)
        return super().itemChange(change, value)

    def mousePressEvent(self, event):  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self.view.drag_modifiers = event.modifiers()
            self.view._on_drag_started(self)
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event):  # noqa: N802
        super().mouseReleaseEvent(event)
        if event.button() == Qt.MouseButton.LeftButton:
            self.view._on_drag_finished(self)

    def hoverEnterEvent(self, event):  # noqa: N802
        self.view.jointHovered.emit(self.label)
        super().hoverEnterEvent(event)

    def contextMenuEvent(self, event):  # noqa: N802
        self.view._show_joint_menu(self, event.screenPos())


class ImageView(QGraphicsView):
    keypointDragged = Signal(str, int, float, float, int)  # side, joint, u px, v px, drag id
    dragFinished = Signal(str, int, int)  # side, joint, drag id
    jointHovered = Signal(str)
    jointVisibilityToggled = Signal(str, int)  # side, joint
    jointDepthStepped = Signal(str, int, int)  # side, joint, +1 farther / -1 nearer
    boxDrawn = Signal(str, float, float, float, float)  # side, u0, v0, u1, v1 (pixels)
    handSelected = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)  # drag the background to pan
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setBackgroundBrush(QColor(40, 40, 40))
        self._pixmap_item = QGraphicsPixmapItem()
        self._pixmap_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self._pixmap_item)
        self._handles: dict[str, list[KeypointHandle]] = {}
        self._skeletons: dict[str, QGraphicsPathItem] = {}
        for side in HAND_SIDES:
            path_item = QGraphicsPathItem()
            pen = QPen(QColor(*HAND_COLORS[side]), 2.0)
            pen.setCosmetic(True)
            path_item.setPen(pen)
            path_item.setZValue(5)
            self.scene().addItem(path_item)
            self._skeletons[side] = path_item
            self._handles[side] = []
            for j in range(NUM_JOINTS):
                handle = KeypointHandle(self, side, j)
                self.scene().addItem(handle)
                handle.hide()
                self._handles[side].append(handle)
        self._present = {s: False for s in HAND_SIDES}
        self._visible = np.full((2, NUM_JOINTS), 2, dtype=int)  # visibility codes
        self._weak = np.zeros((2, NUM_JOINTS), dtype=bool)  # low detector confidence
        self._selected_hand: str | None = None
        self._show_keypoints = True
        self._updating = False  # positions set by code, not by the user
        self._dragging: KeypointHandle | None = None
        self._drag_id = 0
        self._image_size: tuple[int, int] | None = None
        self._selected_joint: tuple[str, int] | None = None
        self.drag_modifiers = Qt.KeyboardModifier.NoModifier  # of the drag in progress
        self._hint = ""
        self._box_side: str | None = None  # "Add hand": the next background drag is a box
        self._box_start: QPointF | None = None
        self._box_item = QGraphicsRectItem()
        box_pen = QPen(QColor(255, 255, 0), 1.5, Qt.PenStyle.DashLine)
        box_pen.setCosmetic(True)
        self._box_item.setPen(box_pen)
        self._box_item.setZValue(20)
        self._box_item.hide()
        self.scene().addItem(self._box_item)
        self._ghosts: dict[str, QGraphicsPathItem] = {}
        for side in HAND_SIDES:
            ghost = QGraphicsPathItem()
            pen = QPen(QColor(*GHOST_COLOR), 1.5, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            ghost.setPen(pen)
            ghost.setZValue(4)
            self.scene().addItem(ghost)
            self._ghosts[side] = ghost
        self._style_handles()

    # --- content --------------------------------------------------------------------------
    def set_image(self, image_rgb: np.ndarray | None) -> None:
        if image_rgb is None:
            self._pixmap_item.setPixmap(QPixmap())
            self._image_size = None
            return
        size = (image_rgb.shape[1], image_rgb.shape[0])
        self._pixmap_item.setPixmap(QPixmap.fromImage(rgb_to_qimage(image_rgb)))
        if size != self._image_size:
            self._image_size = size
            self.scene().setSceneRect(QRectF(0, 0, size[0], size[1]))
            self.fit()

    def set_keypoints(
        self, uv_by_side: dict[str, np.ndarray | None], visible: np.ndarray | None = None,
        weak: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """Pixel positions (21, 2) per side (None: hand absent), (2, 21) visibility codes
        (2 visible, 1 occluded, 0 outside; booleans: visible / occluded) and (2, 21) weak
        joints (low detector confidence: drawn with a red ring; None: none)."""
        self._weak = np.zeros((2, NUM_JOINTS), dtype=bool) if weak is None else np.asarray(weak, dtype=bool)
        if visible is not None:
            codes = np.asarray(visible)
            self._visible = np.where(codes, 2, 1) if codes.dtype == bool else codes.astype(int)
        self._updating = True
        try:
            for side in HAND_SIDES:
                uv = uv_by_side.get(side)
                present = uv is not None and np.isfinite(uv).all()
                self._present[side] = bool(present)
                for j, handle in enumerate(self._handles[side]):
                    if present and handle is not self._dragging:
                        handle.setPos(float(uv[j, 0]), float(uv[j, 1]))
                    handle.setVisible(bool(present) and self._show_keypoints)
                self._update_skeleton(side)
        finally:
            self._updating = False
        self._style_handles()

    def set_ghosts(self, uv_by_side: dict[str, np.ndarray | None]) -> None:
        """Network K's refined keypoints, drawn as a dashed skeleton with small rings."""
        for side in HAND_SIDES:
            uv = uv_by_side.get(side)
            path = QPainterPath()
            if uv is not None and np.isfinite(uv).all():
                for parent, child in _BONES:
                    path.moveTo(QPointF(*uv[parent]))
                    path.lineTo(QPointF(*uv[child]))
                for u, v in uv:
                    path.addEllipse(QPointF(u, v), 2.5, 2.5)
            self._ghosts[side].setPath(path)

    def ghost_path(self, side: str) -> QPainterPath:
        return self._ghosts[side].path()

    def set_hint(self, text: str) -> None:
        """A line of help drawn over the view when it has nothing to show yet."""
        if text != self._hint:
            self._hint = text
            self.viewport().update()

    def hint(self) -> str:
        return self._hint

    def drawForeground(self, painter: QPainter, rect) -> None:  # noqa: N802
        super().drawForeground(painter, rect)
        if not self._hint:
            return
        painter.save()
        painter.resetTransform()
        box = self.viewport().rect().adjusted(12, 12, -12, -12)
        painter.setPen(QColor(240, 240, 240))
        painter.drawText(box, int(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft
                                  | Qt.TextFlag.TextWordWrap), self._hint)  # fmt: skip
        painter.restore()

    def select_joint(self, side: str, joint: int) -> None:
        self._selected_joint = (side, joint)
        self._style_handles()

    def selected_joint(self) -> tuple[str, int] | None:
        return self._selected_joint

    def set_keypoints_shown(self, shown: bool) -> None:
        self._show_keypoints = bool(shown)
        for side in HAND_SIDES:
            for handle in self._handles[side]:
                handle.setVisible(self._present[side] and self._show_keypoints)
            self._skeletons[side].setVisible(self._show_keypoints)

    def set_selected_hand(self, side: str | None) -> None:
        self._selected_hand = side
        self._style_handles()

    def selected_hand(self) -> str | None:
        return self._selected_hand

    def weak_joints(self) -> np.ndarray:
        """(2, 21) bool: the joints drawn as weak (a copy)."""
        return self._weak.copy()

    def handle(self, side: str, joint: int) -> KeypointHandle:
        return self._handles[side][joint]

    def handle_pixel(self, side: str, joint: int) -> np.ndarray:
        pos = self._handles[side][joint].pos()
        return np.array([pos.x(), pos.y()])

    def fit(self) -> None:
        if self._image_size is not None:
            self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    # --- drawing --------------------------------------------------------------------------
    def _update_skeleton(self, side: str) -> None:
        path = QPainterPath()
        if self._present[side]:
            handles = self._handles[side]
            for parent, child in _BONES:
                path.moveTo(handles[parent].pos())
                path.lineTo(handles[child].pos())
        self._skeletons[side].setPath(path)

    def _style_handles(self) -> None:
        for row, side in enumerate(HAND_SIDES):
            base = QColor(*HAND_COLORS[side])
            emphasised = self._selected_hand in (None, side)
            for j, handle in enumerate(self._handles[side]):
                fill = QColor(base)
                code = int(self._visible[row, j])
                if code == 1:  # occluded: faint
                    fill.setAlpha(HIDDEN_JOINT_ALPHA)
                elif code == 0:  # outside the image: a dashed outline
                    fill.setAlpha(OUTSIDE_JOINT_ALPHA)
                pen = QPen(
                    QColor(255, 255, 255) if emphasised else QColor(30, 30, 30), 2.0 if emphasised else 1.0
                )
                if self._weak[row, j]:
                    pen = QPen(QColor(*WEAK_JOINT_COLOR), 3.0)
                if code == 0:
                    pen.setStyle(Qt.PenStyle.DashLine)
                if handle.isSelected() or self._selected_joint == (side, j):
                    pen = QPen(QColor(255, 255, 0), 3.0)
                handle.setBrush(QBrush(fill))
                handle.setPen(pen)
                handle.setOpacity(1.0 if emphasised else 0.55)

    # --- user interaction ---------------------------------------------------------------------
    def _on_drag_started(self, handle: KeypointHandle) -> None:
        self._drag_id += 1
        self._dragging = handle
        self._selected_joint = (handle.side, handle.joint)
        handle.setCursor(Qt.CursorShape.ClosedHandCursor)
        if self._selected_hand not in (None, handle.side):
            self.set_selected_hand(handle.side)
            self.handSelected.emit(handle.side)

    def _on_handle_moved(self, handle: KeypointHandle) -> None:
        if self._updating:
            return
        self._update_skeleton(handle.side)
        if handle is self._dragging:
            pos = handle.pos()
            self.keypointDragged.emit(handle.side, handle.joint, pos.x(), pos.y(), self._drag_id)

    def _on_drag_finished(self, handle: KeypointHandle) -> None:
        if self._dragging is handle:
            self._dragging = None
            handle.setCursor(Qt.CursorShape.OpenHandCursor)
            self.dragFinished.emit(handle.side, handle.joint, self._drag_id)
        self._style_handles()

    def _show_joint_menu(self, handle: KeypointHandle, screen_pos) -> None:
        menu = QMenu(self)
        row = HAND_SIDES.index(handle.side)
        names = {2: "occluded", 1: "outside the image", 0: "visible"}  # what the next state is
        action = QAction(f"Mark {names[int(self._visible[row, handle.joint])]} (V)", menu)
        action.triggered.connect(lambda: self.jointVisibilityToggled.emit(handle.side, handle.joint))
        menu.addAction(action)
        menu.popup(screen_pos)

    def request_box(self, side: str | None) -> None:
        """Arm (or, with None, disarm) box drawing: the next drag draws the box to fit a
        ``side`` hand in, instead of panning."""
        self._box_side = side
        self._box_start = None
        self._box_item.hide()
        self.setDragMode(QGraphicsView.DragMode.NoDrag if side else QGraphicsView.DragMode.ScrollHandDrag)
        self.viewport().setCursor(Qt.CursorShape.CrossCursor if side else Qt.CursorShape.OpenHandCursor)

    def box_requested(self) -> str | None:
        return self._box_side

    def mousePressEvent(self, event):  # noqa: N802
        if self._box_side is not None and event.button() == Qt.MouseButton.LeftButton:
            self._box_start = self.mapToScene(event.position().toPoint())
            self._box_item.setRect(QRectF(self._box_start, self._box_start))
            self._box_item.show()
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event):  # noqa: N802
        if self._box_start is not None:
            end = self.mapToScene(event.position().toPoint())
            self._box_item.setRect(QRectF(self._box_start, end).normalized())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event):  # noqa: N802
        if self._box_start is not None and event.button() == Qt.MouseButton.LeftButton:
            end = self.mapToScene(event.position().toPoint())
            rect = QRectF(self._box_start, end).normalized()
            side = self._box_side
            self.request_box(None)
            self.boxDrawn.emit(side, rect.left(), rect.top(), rect.right(), rect.bottom())
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def wheelEvent(self, event):  # noqa: N802 - zoom around the mouse; Shift on a joint: depth
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            item = self.itemAt(event.position().toPoint())
            target = (item.side, item.joint) if isinstance(item, KeypointHandle) else self._selected_joint
            if target is not None:
                self.select_joint(*target)
                delta = event.angleDelta().y() or event.angleDelta().x()  # Shift turns y into x on some
                self.jointDepthStepped.emit(target[0], target[1], 1 if delta > 0 else -1)
                event.accept()
                return
        factor = 1.0015 ** event.angleDelta().y()
        self.scale(factor, factor)

    def mouseDoubleClickEvent(self, event):  # noqa: N802
        if self.itemAt(event.position().toPoint()) in (None, self._pixmap_item):
            self.fit()
        super().mouseDoubleClickEvent(event)
