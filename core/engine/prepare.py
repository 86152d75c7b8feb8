"""Preparing one reconstruction request: type and device checks, image validation, the image
features (through the engine's cache) and network K -- everything that is fixed before the
first occupancy is evaluated, returned frozen as :class:`PreparedInputs`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from core.engine.backends import ImageFeatures, resolve_device
from core.engine.hands import HandFrame, hand_frames
from core.engine.image_input import validate_image
from core.engine.settings import ReconstructionSettings
from core.errors import ImageError, InputError, KeypointError
from core.types import Camera, TwoHandKeypoints

ONE_HAND_NOTE = "one hand only: reconstructed with network I alone (R needs both hands)"


@dataclass(frozen=True)
class PreparedInputs:
    """The fixed inputs of one job, shared by its preview and final stages."""

    settings: ReconstructionSettings
    camera: Camera
    keypoints: TwoHandKeypoints  # after K when it ran
    frames: Mapping[str, HandFrame]  # the present hands
    features: ImageFeatures | None  # None in the HALO-only mode (no image)
    features_key: tuple | None  # the engine's feature-cache key (None without an image)
    cache_hit: bool  # the image features came from the cache
    refine: bool  # network R will run (weights have it, asked for, both hands present)
    notes: tuple[str, ...]
    timings_s: Mapping[str, float]  # validate, image_features, keypoint_refiner
    setup_s: float  # the whole preparation


def check_request(engine, camera, keypoints, settings) -> None:
    """Clear errors for arguments of the wrong type or for another device than the engine's."""
    if not isinstance(settings, ReconstructionSettings):
        raise InputError(f"settings must be a ReconstructionSettings, got {type(settings).__name__}")
    if not isinstance(camera, Camera):
        raise InputError(f"camera must be a core.types.Camera, got {type(camera).__name__}")
    if not isinstance(keypoints, TwoHandKeypoints):
        raise InputError(f"keypoints must be a core.types.TwoHandKeypoints, got {type(keypoints).__name__}")
    device = resolve_device(settings.device) if settings.device != "auto" else engine.device
    if device != engine.backend.device:
        raise InputError(
            f"this engine runs on {engine.backend.device}; create Engine(device={settings.device!r}) "
            "to reconstruct there"
        )


def _refined_keypoints(backend, features, keypoints, frames, notes, timings):
    """Network K's keypoints and their frames, or the given ones when K's output is unusable."""
    t = time.perf_counter()
    refined = backend.refine_keypoints(features, keypoints)
    timings["keypoint_refiner"] = time.perf_counter() - t
    if keypoints.left is None or keypoints.right is None:
        notes.append("keypoint refiner skipped: it needs both hands")
    try:
        return refined, hand_frames(refined)
    except KeypointError as exc:  # e.g. untrained weights: keep what the user gave
        notes.append(f"network K's output was unusable ({exc}); the input keypoints were used")
        return keypoints, frames


def prepare_inputs(engine, image, camera, keypoints, settings) -> PreparedInputs:
    """Check and validate the request, encode the image (cached) and run K when asked."""
    t0 = time.perf_counter()
    check_request(engine, camera, keypoints, settings)
    backend = engine.backend
    timings: dict[str, float] = {}
    notes: list[str] = []
    frames = hand_frames(keypoints)
    if backend.needs_image and image is None:
        raise ImageError("this engine (Im2Hands networks) needs the image, not only keypoints")
    if image is not None:
        validate_image(image, camera)
    timings["validate"] = time.perf_counter() - t0

    features, cache_hit, features_key = None, False, None
    use_k = settings.use_keypoint_refiner and backend.has_keypoint_refiner
    with torch.inference_mode():
        if backend.needs_image:
            t = time.perf_counter()
            features, cache_hit, features_key = engine._features(image, camera, frames, use_k)
            timings["image_features"] = time.perf_counter() - t
        if settings.use_keypoint_refiner and not use_k:
            notes.append("keypoint refiner asked for but these weights have no network K")
        if use_k:
            keypoints, frames = _refined_keypoints(backend, features, keypoints, frames, notes, timings)
    refine = backend.has_refinement and settings.use_refinement
    if refine and len(frames) < 2:
        refine = False
        notes.append(ONE_HAND_NOTE)
    return PreparedInputs(
        settings=settings,
        camera=camera,
        keypoints=keypoints.copy(),
        frames=MappingProxyType(dict(frames)),
        features=features,
        features_key=features_key,
        cache_hit=cache_hit,
        refine=refine,
        notes=tuple(notes),
        timings_s=MappingProxyType(timings),
        setup_s=time.perf_counter() - t0,
    )

