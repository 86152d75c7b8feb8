"""The 3D view: hand meshes, draggable 3D keypoints and the interpenetration region.

Everything here runs on the GUI thread (VTK objects belong to it). Each visual layer is a
small class that creates its actors once and afterwards updates their data in place, which
costs far less than re-adding actors. Geometry arrives as plain numpy arrays in the camera
frame (x right, y down, z forward, metres); the default view looks through the photo's
camera, so meshes line up with the image.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pyvista as pv
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget
from pyvistaqt import QtInteractor
from vtkmodules.vtkInteractionWidgets import vtkSphereWidget
from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper, vtkRenderer, vtkTextActor

from app.colors import HAND_COLORS, PENETRATION_COLOR, WEAK_JOINT_COLOR, rgb01
from core.hand.joints import HAND_SIDES, NUM_JOINTS, bones
from core.types import Camera, HandMesh, Reconstruction, TwoHandKeypoints

HANDLE_RADIUS_M = 0.005
JOINT_OPACITY = {2: 1.0, 1: 0.35, 0: 0.12}  # by visibility code: visible, occluded, outside
_BONE_LINES = np.array([[2, p, c] for p, c in bones("mano")], dtype=np.int64).ravel()


def photo_view(camera: Camera, viewport_w: int, viewport_h: int) -> tuple[float, tuple[float, float]]:
    """VTK view angle (vertical, degrees) and window centre that show exactly what the
    photo's pinhole camera sees, the whole image fitted into a viewport of that size.
    (A VTK camera at the origin looking down +z with up = -y.)"""
    K = np.asarray(camera.K, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    aspect = viewport_w / max(viewport_h, 1)
    # tan of the half field of view that fits the image's half-width / half-height.
    tan_v = max((camera.height / 2) / fy, (camera.width / 2) / fx / aspect)
    tan_h = tan_v * aspect
    # Put the image centre (not the principal point) at the viewport centre.
    centre_x = ((camera.width / 2 - cx) / fx) / tan_h
    centre_y = ((camera.height / 2 - cy) / fy) / tan_v
    return float(np.degrees(2 * np.arctan(tan_v))), (centre_x, -centre_y)


def mesh_to_polydata(vertices: np.ndarray, faces: np.ndarray) -> pv.PolyData:
    return pv.PolyData.from_regular_faces(
        np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64)
    )


class HandMeshLayer:
    """One hand's surface; vertices inside the other hand take the penetration colour."""

    def __init__(self, plotter: pv.Plotter, side: str):
        self.side = side
        self._plotter = plotter
        self.poly = pv.PolyData()
        self.actor = None
        self.highlighted_vertices = 0
        self.face_count = 0
        self._shown = True

    def update(self, mesh: HandMesh | None) -> None:
        if mesh is None or mesh.is_empty:
            self.face_count = 0
            self.highlighted_vertices = 0
            if self.actor is not None:
                self.actor.SetVisibility(False)
            return
        colors = np.empty((len(mesh.vertices), 3), dtype=np.uint8)
        colors[:] = HAND_COLORS[self.side]
        inside = mesh.inside_other
        if inside is not None and len(inside) == len(mesh.vertices):
            colors[np.asarray(inside, dtype=bool)] = PENETRATION_COLOR
            self.highlighted_vertices = int(np.count_nonzero(inside))
        else:
            self.highlighted_vertices = 0
        fresh = mesh_to_polydata(mesh.vertices, mesh.faces)
        fresh.point_data["rgb"] = colors
        self.poly.copy_from(fresh, deep=False)  # same object: the existing actor follows
        self.face_count = int(len(mesh.faces))
        if self.actor is None:
            self.actor = self._plotter.add_mesh(
                self.poly, scalars="rgb", rgb=True, smooth_shading=True, name=f"mesh_{self.side}",
                reset_camera=False, render=False, specular=0.2,
            )  # fmt: skip
        self.actor.SetVisibility(self._shown)

    def set_shown(self, shown: bool) -> None:
        self._shown = shown
        if self.actor is not None:
            self.actor.SetVisibility(shown and self.face_count > 0)

    def is_visible(self) -> bool:
        return self.actor is not None and bool(self.actor.GetVisibility()) and self.face_count > 0


class PenetrationLayer:
    """The region inside both hands, in its own colour, and its volume as text.

    The region lies inside both meshes, so it is drawn in an overlay renderer (a second
    layer sharing the camera) that shows through the hands, like an x-ray."""

    def __init__(self, plotter: pv.Plotter):
        self._plotter = plotter
        self.poly = pv.PolyData()
        self.overlay = vtkRenderer()
        self.overlay.SetLayer(1)
        self.overlay.InteractiveOff()
        self.overlay.SetActiveCamera(plotter.renderer.GetActiveCamera())
        plotter.ren_win.SetNumberOfLayers(2)
        plotter.ren_win.AddRenderer(self.overlay)
        mapper = vtkPolyDataMapper()
        mapper.SetInputData(self.poly)
        self.actor = vtkActor()
        self.actor.SetMapper(mapper)
        self.actor.GetProperty().SetColor(*rgb01(PENETRATION_COLOR))
        self.actor.GetProperty().SetOpacity(0.8)
        self.actor.SetVisibility(False)
        self.overlay.AddActor(self.actor)
        self.volume_cm3 = 0.0
        self.face_count = 0
        self._shown = True
        self.text = vtkTextActor()
        self.text.SetDisplayPosition(10, 10)
        self.text.GetTextProperty().SetFontSize(16)
        self.text.GetTextProperty().SetColor(*rgb01(PENETRATION_COLOR))
        plotter.add_actor(self.text, reset_camera=False, name="penetration_text", render=False)

    def update(self, mesh: HandMesh | None, volume_cm3: float) -> None:
        self.volume_cm3 = float(volume_cm3)
        self.text.SetInput(f"penetration {self.volume_cm3:.2f} cm³" if self.volume_cm3 > 0 else "")
        if mesh is None or mesh.is_empty:
            self.face_count = 0
            self.actor.SetVisibility(False)
            return
        self.poly.copy_from(mesh_to_polydata(mesh.vertices, mesh.faces), deep=False)
        self.face_count = int(len(mesh.faces))
        self.actor.SetVisibility(self._shown)

    def set_shown(self, shown: bool) -> None:
        self._shown = shown
        self.text.SetVisibility(shown)
        self.actor.SetVisibility(shown and self.face_count > 0)


class KeypointLayer:
    """The 42 keypoints as sphere handles (drag moves them in the view plane) + bones."""

    def __init__(self, plotter: QtInteractor, on_moved, on_drag_started):
        self._plotter = plotter
        self._on_moved = on_moved  # (side, joint, xyz, drag_id)
        self._on_drag_started = on_drag_started
        self.selected: tuple[str, int] | None = None  # the joint last grabbed
        self.opacities = np.ones((len(HAND_SIDES), NUM_JOINTS))
        self.weak = np.zeros((len(HAND_SIDES), NUM_JOINTS), dtype=bool)
        self._shown = True
        self.closed = False
        self._present = {s: False for s in HAND_SIDES}
        self.dragging: tuple[str, int] | None = None
        self._drag_id = 0
        self.widgets: dict[str, list[vtkSphereWidget]] = {}
        self.skeletons: dict[str, pv.PolyData] = {}
        self.skeleton_actors = {}
        for side in HAND_SIDES:
            self.widgets[side] = [self._make_widget(side, j) for j in range(NUM_JOINTS)]
            poly = pv.PolyData(np.zeros((NUM_JOINTS, 3), dtype=np.float32), lines=_BONE_LINES)
            self.skeletons[side] = poly
            actor = plotter.add_mesh(
                poly, color=rgb01(HAND_COLORS[side]), line_width=3, name=f"bones_{side}",
                reset_camera=False, render=False, lighting=False,
            )  # fmt: skip
            actor.SetVisibility(False)
            self.skeleton_actors[side] = actor

    def _make_widget(self, side: str, joint: int) -> vtkSphereWidget:
        widget = vtkSphereWidget()
        widget.SetInteractor(self._plotter.iren.interactor)
        widget.SetRepresentationToSurface()
        widget.SetThetaResolution(12)
        widget.SetPhiResolution(8)
        widget.SetRadius(HANDLE_RADIUS_M)
        widget.ScaleOff()  # translation only; the right button stays with the camera
        widget.GetSphereProperty().SetColor(*rgb01(HAND_COLORS[side]))
        widget.GetSelectedSphereProperty().SetColor(1.0, 1.0, 0.2)
        widget.AddObserver("StartInteractionEvent", lambda *_: self._start(side, joint))
        widget.AddObserver("InteractionEvent", lambda w, _e: self._moved(side, joint, w.GetCenter()))
        widget.AddObserver("EndInteractionEvent", lambda *_: self._end())
        return widget

    def _start(self, side: str, joint: int) -> None:
        self._drag_id += 1
        self.dragging = (side, joint)
        self.selected = (side, joint)
        self._on_drag_started(side)

    def _moved(self, side: str, joint: int, center) -> None:
        self._on_moved(side, joint, np.asarray(center, dtype=np.float64), self._drag_id)

    def _end(self) -> None:
        self.dragging = None

    @contextmanager
    def _batched(self):
        """Widgets render on every enable/disable; 42 of them would cost 42 renders."""
        interactor = self._plotter.iren.interactor
        interactor.EnableRenderOff()
        try:
            yield
        finally:
            interactor.EnableRenderOn()

    def update(self, keypoints: TwoHandKeypoints | None) -> None:
        if self.closed:
            return
        with self._batched():
            self._update(keypoints)

    def _update(self, keypoints: TwoHandKeypoints | None) -> None:
        for side in HAND_SIDES:
            joints = None if keypoints is None else keypoints.hand(side)
            self._present[side] = joints is not None
            if joints is not None:
                self.skeletons[side].points = np.asarray(joints, dtype=np.float32)
                for j, widget in enumerate(self.widgets[side]):
                    if self.dragging != (side, j):
                        widget.SetCenter(*map(float, joints[j]))
            self._apply_visibility(side)

    def set_joint_visibility(self, codes: np.ndarray | None) -> None:
        """Visibility codes (2, 21): occluded joints faint, joints outside the image fainter."""
        codes = np.full((len(HAND_SIDES), NUM_JOINTS), 2) if codes is None else np.asarray(codes, dtype=int)
        self.opacities = np.choose(codes, [JOINT_OPACITY[0], JOINT_OPACITY[1], JOINT_OPACITY[2]])
        for row, side in enumerate(HAND_SIDES):
            for j, widget in enumerate(self.widgets[side]):
                widget.GetSphereProperty().SetOpacity(float(self.opacities[row, j]))

    def set_weak_joints(self, weak: np.ndarray | None) -> None:
        """(2, 21) bool: joints of low detector confidence are drawn red."""
        shape = (len(HAND_SIDES), NUM_JOINTS)
        self.weak = np.zeros(shape, dtype=bool) if weak is None else np.asarray(weak, bool).reshape(shape)
        for row, side in enumerate(HAND_SIDES):
            for j, widget in enumerate(self.widgets[side]):
                color = WEAK_JOINT_COLOR if self.weak[row, j] else HAND_COLORS[side]
                widget.GetSphereProperty().SetColor(*rgb01(color))

    def sphere_color(self, side: str, joint: int) -> tuple[float, float, float]:
        return tuple(self.widgets[side][joint].GetSphereProperty().GetColor())

    def _apply_visibility(self, side: str) -> None:
        on = self._shown and self._present[side]
        self.skeleton_actors[side].SetVisibility(on)
        for widget in self.widgets[side]:
            if bool(widget.GetEnabled()) != on:
                widget.SetEnabled(on)

    def set_shown(self, shown: bool) -> None:
        self._shown = shown
        if self.closed:
            return
        with self._batched():
            for side in HAND_SIDES:
                self._apply_visibility(side)

    def handle_center(self, side: str, joint: int) -> np.ndarray:
        return np.asarray(self.widgets[side][joint].GetCenter())

    def close(self) -> None:
        self.closed = True
        with self._batched():
            for side in HAND_SIDES:
                for widget in self.widgets[side]:
                    widget.SetEnabled(False)
                    widget.SetInteractor(None)


class Scene3DView(QWidget):
    keypointMoved = Signal(str, int, float, float, float, int)  # side, joint, x, y, z (m), drag id
    handSelected = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        # Render only when something changed, without MSAA: software GL (llvmpipe) renders
        # cost tens of ms and the GUI thread must stay responsive.
        self.plotter = QtInteractor(self, auto_update=False, multi_samples=1)
        layout.addWidget(self.plotter)
        self.plotter.set_background("#202124")
        self.meshes = {side: HandMeshLayer(self.plotter, side) for side in HAND_SIDES}
        self.penetration = PenetrationLayer(self.plotter)
        self.keypoints = KeypointLayer(self.plotter, self._keypoint_moved, self.handSelected.emit)
        self._camera: Camera | None = None
        self._last_keypoints: TwoHandKeypoints | None = None
        self.shown = {"meshes": True, "keypoints": True, "penetration": True}
        self._warmed_up = False
        self._render_pending = False

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if not self._warmed_up:
            self._warmed_up = True
            QTimer.singleShot(0, self.warm_up)

    def warm_up(self) -> None:
        """Build every actor and compile its shaders once, at start-up, so the first
        reconstruction does not stall the GUI thread for that (hundreds of ms on llvmpipe)."""
        if self.closed or self._last_keypoints is not None:
            return
        tetra = HandMesh(
            np.array([[0, 0, 1], [0.01, 0, 1], [0, 0.01, 1], [0, 0, 1.01]], dtype=np.float32),
            np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], dtype=np.int32),
            np.array([True, False, False, False]),
        )
        dummy = np.zeros((NUM_JOINTS, 3)) + [0.0, 0.0, 1.0]
        for layer in self.meshes.values():
            layer.update(tetra)
        self.penetration.update(tetra, 0.0)
        self.keypoints.update(TwoHandKeypoints(left=dummy, right=dummy))
        self.reset_view()  # the dummies must be in view, or culling skips their shaders
        self.render_now()
        for layer in self.meshes.values():
            layer.update(None)
        self.penetration.update(None, 0.0)
        self.keypoints.update(self._last_keypoints)
        self.render()

    def drag_modifiers(self) -> tuple[bool, bool]:
        """(Shift, Ctrl) held during the 3D drag in progress."""
        interactor = self.plotter.iren.interactor
        return bool(interactor.GetShiftKey()), bool(interactor.GetControlKey())

    def _keypoint_moved(self, side: str, joint: int, xyz: np.ndarray, drag_id: int) -> None:
        self.keypointMoved.emit(side, joint, float(xyz[0]), float(xyz[1]), float(xyz[2]), drag_id)

    # --- content ----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.keypoints.closed

    def show_reconstruction(self, reconstruction: Reconstruction | None) -> None:
        if self.closed:
            return
        rec = reconstruction
        for side in HAND_SIDES:
            self.meshes[side].update(None if rec is None else getattr(rec, side))
        self.penetration.update(
            None if rec is None else rec.penetration_mesh, 0.0 if rec is None else rec.penetration_volume_cm3
        )
        self.render()

    def show_keypoints(self, keypoints: TwoHandKeypoints | None, camera: Camera | None,
                       visibility: np.ndarray | None = None,
                       weak: np.ndarray | None = None) -> None:  # fmt: skip
        if self.closed:
            return
        first = self._last_keypoints is None and keypoints is not None
        self._last_keypoints = keypoints
        self._camera = camera
        self.keypoints.update(keypoints)
        self.keypoints.set_joint_visibility(visibility)
        self.keypoints.set_weak_joints(weak)
        if first:
            self.reset_view()
        self.render()

    def render(self) -> None:
        """Request a render; several requests in one event-loop pass render once."""
        if not self._render_pending and not self.closed:
            self._render_pending = True
            QTimer.singleShot(0, self.render_now)

    @property
    def render_pending(self) -> bool:
        """A render was requested and has not run yet: the window still shows older content."""
        return self._render_pending

    def render_now(self) -> None:
        self._render_pending = False
        if self.closed:
            return
        self.plotter.renderer.ResetCameraClippingRange()  # new meshes must not be clipped
        self.plotter.render()

    def screenshot(self) -> np.ndarray:
        """The 3D view as an RGB (H, W, 3) uint8 image of what it holds now. The plotter's
        own screenshot only reads the last rendered frame, which lags behind a requested
        (coalesced) render by one event-loop pass, so a pending render runs first."""
        if self._render_pending:
            self.render_now()
        return np.asarray(self.plotter.screenshot(return_img=True))

    # --- toggles and view -------------------------------------------------------------------
    def set_layer_shown(self, layer: str, shown: bool) -> None:
        self.shown[layer] = bool(shown)
        if self.closed:
            return
        if layer == "meshes":
            for m in self.meshes.values():
                m.set_shown(shown)
        elif layer == "keypoints":
            self.keypoints.set_shown(shown)
        elif layer == "penetration":
            self.penetration.set_shown(shown)
        else:
            raise ValueError(f"unknown layer {layer!r}")
        self.render()

    def reset_view(self) -> None:
        """Look through the photo's camera (origin, +z forward, -y up), as the image does."""
        if self.closed:
            return
        cam = self.plotter.camera
        target = np.array([0.0, 0.0, 0.6])
        if self._last_keypoints is not None:
            hands = [h for h in (self._last_keypoints.left, self._last_keypoints.right) if h is not None]
            if hands:
                target = np.concatenate(hands).mean(axis=0)
        cam.position = (0.0, 0.0, 0.0)
        cam.focal_point = (0.0, 0.0, float(max(target[2], 0.05)))  # along the optical axis
        cam.up = (0.0, -1.0, 0.0)
        self._apply_photo_projection()
        self.plotter.renderer.ResetCameraClippingRange()
        self.render()

    def _apply_photo_projection(self) -> None:
        """Field of view and window centre of the photo's camera, for the current size."""
        if self._camera is None or self.closed:
            return
        width, height = self.plotter.ren_win.GetSize()
        view_angle, window_centre = photo_view(self._camera, width, height)
        self.plotter.camera.view_angle = view_angle
        self.plotter.camera.SetWindowCenter(*window_centre)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        QTimer.singleShot(0, self._apply_photo_projection)  # after VTK has its new size

    def close_view(self) -> None:
        if self.closed:
            return
        self.keypoints.close()
        self.plotter.close()
