"""The reconstruction engine: image + keypoints -> two hand meshes, fast.

Pipeline of one call (../shared/reference/official_code.md §A.1, §G), with the reference's
repeated work removed:

1. validate the keypoints (per hand) and the image; canonicalise each present hand;
2. crop the image around both hands (256 px, hands fill 80 %), encode it -- **cached**
   across calls while the image and crop stay the same (dragging a keypoint);
3. optional network K refines the keypoints;
4. network I on a coarse grid (``anchor_resolution``) for both hands in the same rounds;
   512 anchors are sampled on each I mesh and encoded **once** for R;
5. network R by multiresolution extraction at the asked resolution; I's values at points
   already evaluated are reused (a per-hand lattice store), so I runs only at new points;
   lattice points far from a hand's skeleton are skipped;
6. marching cubes in each hand's box, meshes mapped to the camera frame (metres);
7. interpenetration from the two occupancy grids: per-vertex flags, region mesh, volume.

:meth:`Engine.reconstruct_progressive` yields a preview and then the final result from the
same job: the final pass reuses the preview's anchors and every value it computed.
One hand missing: the present hand is reconstructed with I alone (R needs both hands).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.engine.assemble import assemble_reconstruction, mark_penetration
from core.engine.backends import (
    HaloOnlyBackend,
    Im2HandsBackend,
    ImageFeatures,
    autocast,
    load_backend,
    resolve_device,
)
from core.engine.contact import resolve_contact
from core.engine.hands import GLOBAL_SCALE, HandFrame, hand_frames
from core.engine.image_input import (
    crop_for_keypoints,
    crops_close,
    image_digest,
    make_network_crop,
    validate_image,
)
from core.engine.marching import extract_mesh_box, flip_faces
from core.engine.mise import (
    DenseGrid,
    ExtractionCancelled,
    LatticeValues,
    MultiResolutionGrid,
    run_multiresolution,
)
from core.engine.penetration import HandField
from core.engine.prepare import prepare_inputs
from core.engine.settings import ReconstructionSettings
from core.engine.skeleton_mask import far_from_skeleton
from core.engine.values import (
    ClosedFormRefValues,
    EvaluationCounts,
    ExactRefValues,
    GuidedRefValues,
    InitValues,
)
from core.errors import InputError
from core.models.ref_occ import AnchorContext
from core.types import Camera, HandMesh, Reconstruction, TwoHandKeypoints

FEATURE_CACHE_SIZE = 2
HAND_CACHE_SIZE = 4


@dataclass(frozen=True)
class RefinementInputs:
    """What network R reads for one input, computed as a reconstruction computes it
    (:meth:`Engine.refinement_inputs`; for training caches and analysis)."""

    frames: dict[str, HandFrame]
    features: ImageFeatures
    anchors_cam_m: dict[str, np.ndarray]  # side -> (num_anchors, 3) on I's iso-surface
    anchor_context: AnchorContext | None  # None when R does not run (one hand, no I surface)


@dataclass
class _HandState:
    """What one hand's keypoints yield on one image crop, kept across calls so that dragging
    a joint of the *other* hand recomputes nothing for this one: network I's values at
    lattice points, and R's anchors with their encoding (valid for ``anchor_key``)."""

    init_values: LatticeValues
    anchor_key: tuple | None = None
    anchors_cam_m: np.ndarray | None = None
    anchor_context: AnchorContext | None = None  # the context the encoding was made in


class Engine:
    """Reconstructs both hands of an image. ``mode`` is ``"im2hands"`` (networks I + R) or
    ``"halo_only"`` (the keypoint-only HALO base model; the image is not used).

    ``weights``: None = the shipped weights in ``resources/weights``; else a folder, one of
    our ``.safetensors`` files or an official checkpoint (see
    :func:`core.engine.backends.load_backend`)."""

    def __init__(self, weights: str | Path | None = None, device: str = "auto", *, backend=None):
        self.device = resolve_device(device)
        self.backend = backend if backend is not None else load_backend(weights, self.device)
        self._cache: OrderedDict[tuple, tuple] = OrderedDict()
        self._hands: OrderedDict[tuple, _HandState] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        self.hand_cache_hits = 0

    @classmethod
    def from_networks(cls, *, ref=None, init=None, kpts=None, halo=None, device: str = "auto") -> Engine:
        """An engine around networks already in memory (tests, benchmarks, training)."""
        dev = resolve_device(device)
        if halo is not None:
            return cls(device=str(dev), backend=HaloOnlyBackend(halo, dev))
        return cls(device=str(dev), backend=Im2HandsBackend(dev, ref=ref, init=init, kpts=kpts))

    @property
    def mode(self) -> str:
        return self.backend.mode

    def clear_cache(self) -> None:
        """Forget image features and per-hand state (I values, anchors)."""
        self._cache.clear()
        self._hands.clear()

    def clear_hand_cache(self) -> None:
        """Forget the per-hand state only (image features stay cached)."""
        self._hands.clear()

    # -- public API ----------------------------------------------------------------------------
    def reconstruct(
        self,
        image: np.ndarray | None,
        camera: Camera,
        keypoints: TwoHandKeypoints,
        settings: ReconstructionSettings | None = None,
    ) -> Reconstruction:
        """Both hands at ``settings.resolution``."""
        return self.reconstruct_with_fields(image, camera, keypoints, settings)[0]

    def reconstruct_with_fields(
        self,
        image: np.ndarray | None,
        camera: Camera,
        keypoints: TwoHandKeypoints,
        settings: ReconstructionSettings | None = None,
    ) -> tuple[Reconstruction, dict[str, HandField]]:
        """:meth:`reconstruct` plus each hand's occupancy field behind the meshes
        (:class:`~core.engine.penetration.HandField`: inside tests at camera-frame points),
        for evaluations and comparisons."""
        settings = settings or ReconstructionSettings()
        job = _Job(self, image, camera, keypoints, settings, None)
        rec = job.stage(settings.resolution, "final")
        return rec, job.fields

    def reconstruct_progressive(
        self,
        image: np.ndarray | None,
        camera: Camera,
        keypoints: TwoHandKeypoints,
        settings: ReconstructionSettings | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Iterator[Reconstruction]:
        """Yields ``stage="preview"`` (``preview_resolution``) and then ``stage="final"``.
        ``should_cancel`` is polled between steps; when it returns True the generator stops."""
        settings = settings or ReconstructionSettings()
        cancelled = should_cancel or (lambda: False)
        try:
            job = _Job(self, image, camera, keypoints, settings, cancelled)
            if cancelled():
                return
            if settings.preview_resolution < settings.resolution:
                yield job.stage(settings.preview_resolution, "preview")
                if cancelled():
                    return
            yield job.stage(settings.resolution, "final")
        except ExtractionCancelled:
            return

    def refine_keypoints(
        self, image: np.ndarray, camera: Camera, keypoints: TwoHandKeypoints
    ) -> TwoHandKeypoints:
        """Network K alone, on the crop the engine makes around ``keypoints`` (the image
        features land in the cache, so a following :meth:`reconstruct` reuses them).
        K needs both hands: with one missing, a copy of ``keypoints`` comes back."""
        if not isinstance(keypoints, TwoHandKeypoints):
            raise InputError(
                f"keypoints must be a core.types.TwoHandKeypoints, got {type(keypoints).__name__}"
            )
        if not self.backend.has_keypoint_refiner:
            raise InputError("these weights have no network K (kpts_ref.safetensors)")
        frames = hand_frames(keypoints)
        if len(frames) < 2:
            return keypoints.copy()
        validate_image(image, camera)
        with torch.inference_mode():
            features, _, _ = self._features(image, camera, frames, with_kpts=True)
            return self.backend.refine_keypoints(features, keypoints)

    def refinement_inputs(
        self,
        image: np.ndarray,
        camera: Camera,
        keypoints: TwoHandKeypoints,
        settings: ReconstructionSettings | None = None,
    ) -> RefinementInputs:
        """Network I at ``settings.anchor_resolution``, R's anchors on its iso-surface and
        their encoding -- everything a reconstruction computes before R's decoder -- for
        this input (caches included)."""
        # anchors are what is asked for, so R's closed form (which needs none) stays off
        settings = (settings or ReconstructionSettings()).with_(closed_form_ref=False)
        job = _Job(self, image, camera, keypoints, settings, None)
        with torch.inference_mode():
            job._ensure_anchors()
        return RefinementInputs(
            frames=job.frames,
            features=job.features,
            anchors_cam_m=dict(job.anchors_cam_m),
            anchor_context=job.anchor_context if job.refine else None,
        )

    # -- image features (cached) ---------------------------------------------------------------
    def _features(
        self, image: np.ndarray, camera: Camera, frames: dict[str, HandFrame], with_kpts: bool
    ) -> tuple[ImageFeatures, bool, tuple]:
        """(features, served from the cache, cache key) of the crop around ``frames``."""
        transform = crop_for_keypoints(camera, [f.joints_cam_m for f in frames.values()])
        digest = image_digest(image)
        camera_key = (np.asarray(camera.K, np.float64).round(6).tobytes(), camera.width, camera.height)
        for key, (cached_transform, features) in reversed(self._cache.items()):
            if key[:2] == (digest, camera_key) and crops_close(transform, cached_transform):
                if with_kpts and features.kpts is None and self.backend.has_keypoint_refiner:
                    features.kpts = self.backend.kpts.image_features(features.image)
                self._cache.move_to_end(key)
                self.cache_hits += 1
                return features, True, key
        crop = make_network_crop(image, camera, transform)
        features = self.backend.image_features(crop.crop_u8, crop.cam_K_crop, with_kpts)
        key = (digest, camera_key, transform.origin_px, transform.scale)
        self._cache[key] = (transform, features)
        while len(self._cache) > FEATURE_CACHE_SIZE:
            self._cache.popitem(last=False)
        self.cache_misses += 1
        return features, False, key

    def _hand_state(self, features_key, frame: HandFrame, settings, store_resolution: int) -> _HandState:
        """The cached state of one hand (same image crop, same joints, same lattice), or a
        fresh one; entries of evicted crops or moved hands simply age out."""
        key = (
            features_key,
            frame.side,
            np.asarray(frame.joints_cam_m, np.float64).tobytes(),
            settings.box_padding,
            settings.mise_resolution0,
            settings.half_precision,
        )
        state = self._hands.get(key)
        if state is None:
            state = self._hands[key] = _HandState(LatticeValues(store_resolution))
        else:
            self._hands.move_to_end(key)
            self.hand_cache_hits += 1
            state.init_values = state.init_values.covering(store_resolution)
        while len(self._hands) > HAND_CACHE_SIZE:
            self._hands.popitem(last=False)
        return state


class _Job:
    """One reconstruction request: its prepared inputs, R's anchors and every value computed
    so far, shared by its preview and final stages."""

    def __init__(self, engine: Engine, image, camera, keypoints, settings, should_cancel):
        self.inputs = prepare_inputs(engine, image, camera, keypoints, settings)
        self.backend = engine.backend
        self.settings = settings
        self.frames = dict(self.inputs.frames)
        self.should_cancel = should_cancel
        self.refine = self.inputs.refine  # turns False when I finds no surface for the anchors
        self.notes = list(self.inputs.notes)
        # R in closed form from I's values (an identity R): no anchors, no decoder
        self.ref_affine = self.backend.ref_init_affine() if self.refine and settings.closed_form_ref else None
        if self.ref_affine is not None:
            self.notes.append("network R is the identity of I's occupancy: evaluated in closed form")
        self.timings: dict[str, float] = dict(self.inputs.timings_s)
        self.counts = EvaluationCounts()
        store_res = max(settings.resolution, settings.preview_resolution, settings.anchor_resolution)
        self.hands = {
            side: engine._hand_state(self.inputs.features_key, frame, settings, store_res)
            for side, frame in self.frames.items()
        }
        self.init_values = InitValues(
            self.backend,
            self.inputs.features,
            self.frames,
            {s: h.init_values for s, h in self.hands.items()},
            settings.half_precision,
            settings.points_per_batch,
            self.counts,
        )
        self.ref_stores = {s: LatticeValues(store_res) for s in self.frames}
        self.anchor_context: AnchorContext | None = None
        self.anchors_cam_m: dict[str, np.ndarray] = {}
        self.fields: dict[str, HandField] = {}  # the last stage's occupancy, camera frame
        self._skip: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        self._stages_done = 0

    @property
    def features(self) -> ImageFeatures | None:
        return self.inputs.features

    # -- helpers --------------------------------------------------------------------------------
    def _grid(
        self, side: str, resolution: int, threshold: float, store: LatticeValues
    ) -> MultiResolutionGrid:
        s = self.settings
        skip = None
        if s.skip_margin_m is not None:  # one predicate per hand and job (it builds a lookup grid)
            if side not in self._skip:
                margin_box = s.skip_margin_m / GLOBAL_SCALE
                self._skip[side] = far_from_skeleton(self.frames[side].joints_box(), margin_box)
            skip = self._skip[side]
        return MultiResolutionGrid(
            s.mise_resolution0,
            s.upsampling_steps(resolution),
            threshold,
            s.box_size,
            skip_outside=skip,
            prior=store.prior_for(resolution),
        )

    def _extract(self, grids: dict[str, MultiResolutionGrid], evaluate_side) -> None:
        sides = list(grids)

        def evaluate(queries: list[np.ndarray]) -> list[np.ndarray]:
            out = []
            for side, q, grid in zip(sides, queries, grids.values(), strict=True):
                if len(q) == 0:
                    out.append(np.zeros(0, np.float32))
                    continue
                ijk = grid.query()  # the same points as q, as lattice indices
                out.append(evaluate_side(side, q, ijk, grid.resolution))
            return out

        run_multiresolution(list(grids.values()), evaluate, self.should_cancel)
        for g in grids.values():
            self.counts.skipped += g.skipped_points
            self.counts.reused += g.reused_points

    def _mesh(self, side: str, grid: DenseGrid) -> HandMesh:
        vertices_box, faces = extract_mesh_box(grid)
        frame = self.frames[side]
        vertices = frame.box_to_cam(vertices_box).astype(np.float32) if len(vertices_box) else vertices_box
        if frame.flips_orientation and len(faces):
            faces = flip_faces(faces)
        return HandMesh(vertices=vertices, faces=faces)

    def _ensure_anchors(self) -> None:
        """I meshes at ``anchor_resolution`` -> 512 anchors per hand -> R's anchor context.
        A hand whose state already holds anchors for these settings (its keypoints did not
        change since an earlier call) keeps them and its encoding."""
        if self.anchor_context is not None or not self.refine or self.ref_affine is not None:
            return
        s = self.settings
        anchor_key = (s.anchor_resolution, s.threshold_init, s.num_anchors, s.anchor_seed, s.skip_margin_m)
        kept = {side: h for side, h in self.hands.items() if h.anchor_key == anchor_key}
        t = time.perf_counter()
        grids = {
            side: self._grid(side, s.anchor_resolution, s.threshold_init, self.init_values.stores[side])
            for side in self.frames
            if side not in kept
        }
        self._extract(grids, self.init_values)
        meshes = {side: self._mesh(side, g.to_dense()) for side, g in grids.items()}
        self.timings["init_occupancy"] = time.perf_counter() - t
        t = time.perf_counter()
        for side, mesh in meshes.items():
            if mesh.is_empty:
                self.refine = False
                self.notes.append(f"network I found no {side} hand surface: R skipped, I meshes returned")
                return
            self.anchors_cam_m[side] = sample_anchors(mesh, s.num_anchors, s.anchor_seed)
        for side, h in kept.items():
            self.anchors_cam_m[side] = h.anchors_cam_m
        reuse = {side: h.anchor_context for side, h in kept.items()}
        with autocast(self.backend.device, s.half_precision):
            self.anchor_context = self.backend.encode_anchors(
                self.features, self.frames, self.anchors_cam_m, reuse=reuse
            )
        for side, h in self.hands.items():
            h.anchor_key, h.anchors_cam_m = anchor_key, self.anchors_cam_m[side]
            h.anchor_context = self.anchor_context
        self.timings["anchors"] = time.perf_counter() - t

    def _ref_source(self) -> ExactRefValues | GuidedRefValues | ClosedFormRefValues:
        if self.ref_affine is not None:
            return ClosedFormRefValues(self.init_values, self.ref_affine, self.ref_stores)
        exact = ExactRefValues(self.init_values, self.anchor_context, self.ref_stores)
        coarse = self.settings.refinement_resolution
        return exact if coarse is None else GuidedRefValues(exact, coarse)

    def _occupancy_grids(self, resolution: int, timings: dict[str, float]) -> dict[str, MultiResolutionGrid]:
        """Both hands' extraction at ``resolution``: R's field when it runs, else I's."""
        s = self.settings
        with torch.inference_mode():
            if self.refine:
                self._ensure_anchors()
                timings.update(self.timings)
            t = time.perf_counter()
            if self.refine:
                stores, threshold = self.ref_stores, s.threshold_ref
            else:
                stores, threshold = self.init_values.stores, s.threshold_init
            grids = {side: self._grid(side, resolution, threshold, stores[side]) for side in self.frames}
            if self.refine:
                self._extract(grids, self._ref_source())
                timings["refined_occupancy"] = time.perf_counter() - t
            else:
                self._extract(grids, self.init_values)
                timings["init_occupancy"] = timings.get("init_occupancy", 0.0) + time.perf_counter() - t
        return grids

    def _diagnostics(self, stage: str) -> dict:
        return dict(
            mode=self.backend.mode,
            device=str(self.backend.device),
            refinement_used=self.refine,
            cache_hit=self.inputs.cache_hit,
            evaluations=self.counts.as_dict(),
            notes=list(self.notes),
            anchors_cam_m={k: v.tolist() for k, v in self.anchors_cam_m.items()} if stage == "final" else {},
        )

    # -- one stage ------------------------------------------------------------------------------
    def stage(self, resolution: int, name: str) -> Reconstruction:
        t_stage = time.perf_counter()
        timings = dict(self.timings)
        grids = self._occupancy_grids(resolution, timings)

        t = time.perf_counter()
        dense = {side: g.to_dense() for side, g in grids.items()}
        if self.settings.resolve_contact:
            t_contact = time.perf_counter()
            dense = resolve_contact(
                dense,
                {s: self.frames[s].box_to_cam for s in dense},
                {s: self.frames[s].cam_to_box for s in dense},
            )
            timings["contact"] = time.perf_counter() - t_contact
        meshes = {side: self._mesh(side, d) for side, d in dense.items()}
        timings["meshes"] = time.perf_counter() - t

        t = time.perf_counter()
        self.fields = {side: HandField(dense[side], self.frames[side].cam_to_box) for side in meshes}
        region = mark_penetration(meshes, self.fields, self.settings, resolution)
        timings["penetration"] = time.perf_counter() - t
        stage_s = time.perf_counter() - t_stage
        timings["stage"] = stage_s
        # The first stage of a job also pays for validation, image features and K.
        timings["total"] = stage_s + (0.0 if self._stages_done else self.inputs.setup_s)
        self._stages_done += 1
        return assemble_reconstruction(
            self.inputs, meshes, region, resolution, name, timings, self._diagnostics(name)
        )


def sample_anchors(mesh: HandMesh, count: int, seed: int) -> np.ndarray:
    """``count`` surface points spread evenly over ``mesh`` (camera metres); when the
    even sampler returns fewer, the first ones are repeated (as the reference does)."""
    import trimesh

    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    # trimesh warns "only got N/count samples!" on stderr for every short draw; the shortfall
    # is handled below, so the warning is noise in the CLI's and the evaluation's output
    sampler_log = logging.getLogger("trimesh.sample")
    level = sampler_log.level
    sampler_log.setLevel(logging.ERROR)
    try:
        points, _ = trimesh.sample.sample_surface_even(tm, count, seed=seed)
    finally:
        sampler_log.setLevel(level)
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        points, _ = trimesh.sample.sample_surface(tm, count, seed=seed)
        points = np.asarray(points, dtype=np.float64)
    if len(points) < count:
        points = np.concatenate([points, points[np.arange(count - len(points)) % len(points)]])
    return points[:count]


def reconstruct(
    image: np.ndarray | None,
    camera: Camera,
    keypoints: TwoHandKeypoints,
    *,
    weights: str | Path | None = None,
    settings: ReconstructionSettings | None = None,
) -> Reconstruction:
    """One-call convenience: a fresh :class:`Engine` on ``settings.device``."""
    settings = settings or ReconstructionSettings()
    return Engine(weights, device=settings.device).reconstruct(image, camera, keypoints, settings)
