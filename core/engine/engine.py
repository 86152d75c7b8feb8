"""The reconstruction engine: image + keypoints -> two hand meshes, fast.

Pipeline of one call (official_code.md §A.1, §G), with the reference's repeated work removed:

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

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.engine.backends import HaloOnlyBackend, Im2HandsBackend, ImageFeatures, load_backend, resolve_device
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
from core.engine.penetration import HandField, penetration_region
from core.engine.settings import ReconstructionSettings
from core.engine.skeleton_mask import far_from_skeleton
from core.errors import ImageError, InputError, KeypointError
from core.models.ref_occ import AnchorContext
from core.types import Camera, HandMesh, Reconstruction, TwoHandKeypoints

SIDES = ("left", "right")
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
        job = _Job(self, image, camera, keypoints, settings or ReconstructionSettings(), None)
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
    """One reconstruction request: validated inputs, features, anchors and every value
    computed so far, shared by its preview and final stages."""

    def __init__(self, engine: Engine, image, camera, keypoints, settings, should_cancel):
        t0 = time.perf_counter()
        if not isinstance(settings, ReconstructionSettings):
            raise InputError(f"settings must be a ReconstructionSettings, got {type(settings).__name__}")
        if not isinstance(camera, Camera):
            raise InputError(f"camera must be a core.types.Camera, got {type(camera).__name__}")
        if not isinstance(keypoints, TwoHandKeypoints):
            raise InputError(
                f"keypoints must be a core.types.TwoHandKeypoints, got {type(keypoints).__name__}"
            )
        self.engine = engine
        self.backend = engine.backend
        self.settings = settings
        self.camera = camera
        self.should_cancel = should_cancel
        self.device = resolve_device(settings.device) if settings.device != "auto" else engine.device
        if self.device != self.backend.device:
            raise InputError(
                f"this engine runs on {self.backend.device}; create Engine(device={settings.device!r}) "
                "to reconstruct there"
            )
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.evaluations = {
            "init_occ": 0,
            "ref_occ": 0,
            "ref_guided": 0,
            "skipped": 0,
            "reused": 0,
            "init_reused": 0,
        }

        frames = hand_frames(keypoints)
        if self.backend.needs_image:
            if image is None:
                raise ImageError("this engine (Im2Hands networks) needs the image, not only keypoints")
            validate_image(image, camera)
        elif image is not None:
            validate_image(image, camera)
        self.timings["validate"] = time.perf_counter() - t0

        self.features = None
        self.features_key = None  # None in the HALO-only mode (no image)
        self.cache_hit = False
        use_k = settings.use_keypoint_refiner and self.backend.has_keypoint_refiner
        with torch.inference_mode():
            if self.backend.needs_image:
                t = time.perf_counter()
                self.features, self.cache_hit, self.features_key = engine._features(
                    image, camera, frames, use_k
                )
                self.timings["image_features"] = time.perf_counter() - t
            if settings.use_keypoint_refiner and not use_k:
                self.notes.append("keypoint refiner asked for but these weights have no network K")
            if use_k:
                t = time.perf_counter()
                refined = self.backend.refine_keypoints(self.features, keypoints)
                self.timings["keypoint_refiner"] = time.perf_counter() - t
                if keypoints.left is None or keypoints.right is None:
                    self.notes.append("keypoint refiner skipped: it needs both hands")
                try:
                    frames = hand_frames(refined)
                    keypoints = refined
                except KeypointError as exc:  # e.g. untrained weights: keep what the user gave
                    self.notes.append(
                        f"network K's output was unusable ({exc}); the input keypoints were used"
                    )
        self.keypoints = keypoints.copy()
        self.frames = frames
        self.refine = self.backend.has_refinement and settings.use_refinement
        if self.refine and len(frames) < 2:
            self.refine = False
            self.notes.append("one hand only: reconstructed with network I alone (R needs both hands)")
        store_res = max(settings.resolution, settings.preview_resolution, settings.anchor_resolution)
        self.hands = {
            side: engine._hand_state(self.features_key, frame, settings, store_res)
            for side, frame in frames.items()
        }
        self.init_values = {s: h.init_values for s, h in self.hands.items()}
        self.ref_values = {s: LatticeValues(store_res) for s in frames}
        self.anchor_context = None
        self.anchors_cam_m: dict[str, np.ndarray] = {}
        self._skip: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        self.setup_s = time.perf_counter() - t0

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

    def _init_values(self, side: str, points_box: np.ndarray, ijk: np.ndarray, n: int) -> np.ndarray:
        """I's occupancy at lattice points (reused where known, evaluated elsewhere)."""
        store = self.init_values[side]
        found, values = store.lookup(ijk, n)
        missing = ~found
        self.evaluations["init_reused"] += int(found.sum())
        if missing.any():
            values[missing] = self._batched(
                lambda p: self.backend.init_occupancy(
                    self.features, self.frames[side], p, self.settings.half_precision
                ),
                points_box[missing],
            )
            store.add(ijk[missing], n, values[missing])
            self.evaluations["init_occ"] += int(missing.sum())
        return values

    def _batched(self, fn: Callable[[np.ndarray], np.ndarray], points: np.ndarray) -> np.ndarray:
        step = self.settings.points_per_batch
        if len(points) <= step:
            return fn(points)
        return np.concatenate([fn(points[i : i + step]) for i in range(0, len(points), step)])

    def _extract(self, grids: dict[str, MultiResolutionGrid], evaluate_side) -> None:
        sides = list(grids)
        cancel = self.should_cancel

        def evaluate(queries: list[np.ndarray]) -> list[np.ndarray]:
            out = []
            for side, q, grid in zip(sides, queries, grids.values(), strict=True):
                if len(q) == 0:
                    out.append(np.zeros(0, np.float32))
                    continue
                ijk = grid.query()  # the same points as q, as lattice indices
                out.append(evaluate_side(side, q, ijk, grid.resolution))
            return out

        run_multiresolution(list(grids.values()), evaluate, cancel)
        for g in grids.values():
            self.evaluations["skipped"] += g.skipped_points
            self.evaluations["reused"] += g.reused_points

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
        if self.anchor_context is not None or not self.refine:
            return
        s = self.settings
        anchor_key = (s.anchor_resolution, s.threshold_init, s.num_anchors, s.anchor_seed, s.skip_margin_m)
        kept = {side: h for side, h in self.hands.items() if h.anchor_key == anchor_key}
        t = time.perf_counter()
        grids = {
            side: self._grid(side, s.anchor_resolution, s.threshold_init, self.init_values[side])
            for side in self.frames
            if side not in kept
        }
        self._extract(grids, self._init_values)
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
        with autocast_ctx(self):
            self.anchor_context = self.backend.encode_anchors(
                self.features, self.frames, self.anchors_cam_m, reuse=reuse
            )
        for side, h in self.hands.items():
            h.anchor_key, h.anchors_cam_m = anchor_key, self.anchors_cam_m[side]
            h.anchor_context = self.anchor_context
        self.timings["anchors"] = time.perf_counter() - t

    def _ref_values(self, side: str, points_box: np.ndarray, ijk: np.ndarray, n: int) -> np.ndarray:
        coarse = self.settings.refinement_resolution
        if coarse is not None and n > coarse:
            return self._guided_ref_values(side, points_box, ijk, n, coarse)
        return self._ref_values_exact(side, points_box, ijk, n, self._init_values(side, points_box, ijk, n))

    def _ref_values_exact(
        self, side: str, points_box: np.ndarray, ijk: np.ndarray, n: int, init: np.ndarray
    ) -> np.ndarray:
        frame = self.frames[side]
        values = self._batched(
            lambda p: self.backend.ref_occupancy(
                self.features, self.anchor_context, frame, p[:, :3], p[:, 3], self.settings.half_precision
            ),
            np.concatenate([points_box, init[:, None]], axis=1),
        )
        self.ref_values[side].add(ijk, n, values)
        self.evaluations["ref_occ"] += len(values)
        return values

    def _guided_ref_values(
        self, side: str, points_box: np.ndarray, ijk: np.ndarray, n: int, coarse: int
    ) -> np.ndarray:
        """R's field at lattice-``n`` points approximated from the coarse lattice (see
        ``ReconstructionSettings.refinement_resolution``): sigmoid(logit I(x) + trilinear
        interpolation of logit R - logit I over the enclosing coarse cell). Every point of
        a cell that MISE refines has its 8 coarse corners evaluated; points whose corners
        are not all known (none in practice) get R exactly."""
        init = self._init_values(side, points_box, ijk, n)
        factor = n // coarse
        ijk = np.asarray(ijk, dtype=np.int64)
        base = np.minimum(ijk // factor, coarse - 1)
        frac = (ijk - base * factor).astype(np.float32) / factor
        correction = np.zeros(len(ijk), np.float32)
        known = np.ones(len(ijk), dtype=bool)
        for corner in np.ndindex(2, 2, 2):
            c = np.asarray(corner)
            at = base + c
            r_found, r_val = self.ref_values[side].lookup(at, coarse)
            i_found, i_val = self.init_values[side].lookup(at, coarse)
            known &= r_found & i_found
            weight = np.prod(np.where(c == 1, frac, 1.0 - frac), axis=1)
            correction += weight * (_logit(r_val) - _logit(i_val))
        values = _sigmoid(_logit(init) + correction)
        if not known.all():
            values[~known] = self._ref_values_exact(side, points_box[~known], ijk[~known], n, init[~known])
        self.ref_values[side].add(ijk[known], n, values[known])
        self.evaluations["ref_guided"] += int(known.sum())
        return values

    # -- one stage ------------------------------------------------------------------------------
    def stage(self, resolution: int, name: str) -> Reconstruction:
        s = self.settings
        t_stage = time.perf_counter()
        timings = dict(self.timings)
        with torch.inference_mode():
            if self.refine:
                self._ensure_anchors()
                timings.update(self.timings)
            t = time.perf_counter()
            if self.refine:
                grids = {
                    side: self._grid(side, resolution, s.threshold_ref, self.ref_values[side])
                    for side in self.frames
                }
                self._extract(grids, self._ref_values)
                timings["refined_occupancy"] = time.perf_counter() - t
            else:
                grids = {
                    side: self._grid(side, resolution, s.threshold_init, self.init_values[side])
                    for side in self.frames
                }
                self._extract(grids, self._init_values)
                timings["init_occupancy"] = timings.get("init_occupancy", 0.0) + time.perf_counter() - t

        t = time.perf_counter()
        dense = {side: g.to_dense() for side, g in grids.items()}
        meshes = {side: self._mesh(side, d) for side, d in dense.items()}
        timings["meshes"] = time.perf_counter() - t

        t = time.perf_counter()
        region = None
        fields = {side: HandField(dense[side], self.frames[side].cam_to_box) for side in meshes}
        self.fields = fields  # each hand's occupancy in the camera frame (for comparisons)
        if s.penetration and len(meshes) == 2 and not any(m.is_empty for m in meshes.values()):
            for side, other in (("left", "right"), ("right", "left")):
                meshes[side].inside_other = fields[other].contains(meshes[side].vertices)
            bounds = {side: np.stack([m.vertices.min(0), m.vertices.max(0)]) for side, m in meshes.items()}
            # Sample the overlap no finer than half a grid cell of this stage (metres).
            cell_m = s.box_size * GLOBAL_SCALE / resolution
            region = penetration_region(
                fields["left"],
                fields["right"],
                bounds["left"],
                bounds["right"],
                max(s.penetration_spacing_m, 0.5 * cell_m),
            )
        else:
            for m in meshes.values():
                m.inside_other = np.zeros(len(m.vertices), dtype=bool)
        timings["penetration"] = time.perf_counter() - t
        stage_s = time.perf_counter() - t_stage
        timings["stage"] = stage_s
        # The first stage of a job also pays for validation, image features and K.
        timings["total"] = stage_s + (0.0 if self._stages_done else self.setup_s)
        self._stages_done += 1

        info = dict(s.to_dict())
        info.update(
            mode=self.backend.mode,
            device=str(self.backend.device),
            refinement_used=self.refine,
            cache_hit=self.cache_hit,
            evaluations=dict(self.evaluations),
            notes=list(self.notes),
            anchors_cam_m={k: v.tolist() for k, v in self.anchors_cam_m.items()} if name == "final" else {},
        )
        return Reconstruction(
            left=meshes.get("left"),
            right=meshes.get("right"),
            keypoints=self.keypoints.copy(),
            camera=self.camera,
            penetration_volume_cm3=0.0 if region is None else float(region.volume_cm3),
            penetration_mesh=None if region is None else HandMesh(region.vertices_cam_m, region.faces),
            resolution=resolution,
            stage=name,
            timings_s=timings,
            settings=info,
        )

    _stages_done = 0


def autocast_ctx(job: _Job):
    from core.engine.backends import autocast

    return autocast(job.backend.device, job.settings.half_precision)


_LOGIT_CLIP = 1e-6  # keeps logits finite where an occupancy saturates in float32


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def sample_anchors(mesh: HandMesh, count: int, seed: int) -> np.ndarray:
    """``count`` surface points spread evenly over ``mesh`` (camera metres); when the
    even sampler returns fewer, the first ones are repeated (as the reference does)."""
    import trimesh

    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    points, _ = trimesh.sample.sample_surface_even(tm, count, seed=seed)
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
