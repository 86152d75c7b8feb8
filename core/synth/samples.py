"""Training samples: image, camera, keypoints, per-hand occupancy samples, noisy keypoints.

:func:`generate_sample` is a pure function of its seed (and config): scene -> camera -> ground
truth meshes (contact-resolved) -> 256 x 256 render -> occupancy samples in each hand's HALO
canonical frame as the reference recipe draws them (half uniform in the [-0.55, 0.55]^3 box,
half near the surface with sigma = 0.01 normalised units = 4 mm) -> noisy keypoints for K.
:class:`SynthDataset` wraps it as a torch ``Dataset``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from core.geometry.canonical import canon_norm_to_posed_m, canonicalize_hand, posed_m_to_canon_norm
from core.hand.joints import HAND_SIDES
from core.io.atomic import atomic_path
from core.io.images import save_image_rgb
from core.synth import render as rd
from core.synth.hand_model import HandFrame, HandModel
from core.synth.noise import KeypointNoise, perturb_keypoints
from core.synth.scenes import SynthScene, resolved_sdfs, sample_scene
from core.synth.surface import extract_surface
from core.synth.template import HandShapeParams
from core.types import Camera, HandMesh, TwoHandKeypoints

BOX_HALF_NORM = 0.55  # the reference's occupancy box, normalised units (metres / 0.4)


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of :func:`generate_sample`. Defaults follow the reference recipe where it has one."""

    image_size: int = rd.IMAGE_SIZE
    n_uniform: int = 2048  # per hand, uniform in the canonical box
    n_surface: int = 2048  # per hand, near the surface
    surface_sigma_norm: float = 0.01  # normalised units (= 4 mm)
    voxel_m: float = 0.0025  # marching-cubes resolution of the ground-truth meshes
    distance_range_m: tuple[float, float] = (0.5, 1.2)
    focal_range_px: tuple[float, float] = (600.0, 1600.0)  # of the full frame before cropping
    off_axis_deg: float = 15.0
    forearm_prob: float = 0.85
    sleeve_prob: float = 0.5
    occluder_prob: float = 0.3
    interaction: str | None = None  # force one of scenes.INTERACTIONS
    keep_meshes: bool = False
    noise: KeypointNoise = field(default_factory=KeypointNoise)


@dataclass
class OccupancySamples:
    """Query points of one hand in its HALO canonical normalised frame and their labels. The
    first ``n_uniform`` points are uniform in the box, the rest near the surface."""

    points_canon_norm: np.ndarray  # (N, 3) float32
    occupancy: np.ndarray  # (N,) bool, contact-resolved ground truth
    occupancy_raw: np.ndarray  # (N,) bool, this hand's solid alone (overlaps the other hand)
    n_uniform: int


@dataclass
class SynthSample:
    seed: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    camera: Camera  # crop intrinsics; R = I, T = 0 (keypoints are camera-frame)
    keypoints: TwoHandKeypoints  # ground truth, camera frame, metres, mano order
    noisy_keypoints: TwoHandKeypoints  # detector-like noise, for network K
    occupancy: dict[str, OccupancySamples]
    shapes: dict[str, HandShapeParams]
    interaction: str
    overlap_depth_m: float  # raw solids' overlap before resolution (negative: gap)
    labels: np.ndarray  # (H, W) uint8: render.LABEL_* of the visible surface
    # (H, W) camera z of the visible surface, metres (inf where empty); the encoder's dense
    # targets come from it. None for folders written before it was stored.
    depth_m: np.ndarray | None = None
    meshes: dict[str, HandMesh] | None = None  # contact-resolved, camera frame (keep_meshes)


@contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch threads. A sample is many small tensor operations, for which thread
    hand-offs cost more than they gain (badly so on a busy machine): parallelise over samples."""
    prev = torch.get_num_threads()
    if prev != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if prev != n:
            torch.set_num_threads(prev)


# ----------------------------------------------------------------------------------------
def _random_camera_pose(rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    rotation = Rotation.random(random_state=rng).as_matrix()
    z = rng.uniform(*cfg.distance_range_m)
    tx, ty = np.tan(np.deg2rad(rng.uniform(-cfg.off_axis_deg, cfg.off_axis_deg, 2)))
    return rotation, np.array([tx * z, ty * z, z])


def posed_scene(rng: np.random.Generator, cfg: SynthConfig) -> SynthScene:
    """The first draws of a sample from ``rng``: a two-hand scene in the camera frame."""
    scene = sample_scene(rng, cfg.interaction)
    rotation, translation = _random_camera_pose(rng, cfg)
    return scene.transformed(rotation, translation)


def ground_truth_scene(seed: int, config: SynthConfig | None = None) -> SynthScene:
    """The scene behind ``generate_sample(seed, config)`` (same draws), for its exact geometry."""
    with torch_threads(1), torch.no_grad():
        return posed_scene(np.random.default_rng(seed), config or SynthConfig())


def scene_occupancy(scene: SynthScene) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Per side, the exact inside test of the contact-resolved hand: (M, 3) camera-frame
    metres -> (M,) bool (the ground truth the training labels and meshes come from)."""
    models = scene.hand_models()
    fields = {s: _hand_fields(models, s) for s in HAND_SIDES}

    def inside(side: str) -> Callable[[np.ndarray], np.ndarray]:
        def test(points_cam_m: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                points = torch.as_tensor(np.asarray(points_cam_m), dtype=torch.float64)
                return (fields[side](points)[1] < 0).numpy()

        return test

    return {s: inside(s) for s in HAND_SIDES}


def _hand_fields(models: dict[str, HandModel], side: str):
    """(own raw SDF, contact-resolved SDF) of ``side`` at camera-frame points (torch, metres)."""
    other = "right" if side == "left" else "left"

    def raw_and_resolved(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        own, oth = models[side].sdf(points), models[other].sdf(points)
        left, right = (own, oth) if side == "left" else (oth, own)
        res_l, res_r = resolved_sdfs(left, right)
        return own, (res_l if side == "left" else res_r)

    return raw_and_resolved


def surface_points(verts: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniformly distributed over the mesh surface (area-weighted)."""
    tri = verts[faces].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    idx = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    return (tri[idx] * w[..., None]).sum(1)


def _forearm_mesh(
    joints: np.ndarray,
    side: str,
    start: float,
    stop: float,
    half_width: float,
    half_thick: float,
    n_around: int = 20,
    n_along: int = 4,
):
    """An elliptic tube behind the wrist along -distal (from ``start`` to ``stop`` metres),
    flaring slightly towards the elbow; outward faces, closed at the far end."""
    frame = HandFrame.from_keypoints(joints, side)
    ang = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
    rings = []
    for t in np.linspace(0, 1, n_along + 1):
        d = start + (stop - start) * t
        flare = 1.0 + 0.25 * (d / 0.25)
        centre = frame.wrist - d * frame.distal
        ring = centre + flare * (
            half_width * np.cos(ang)[:, None] * frame.radial
            + half_thick * np.sin(ang)[:, None] * frame.palmar
        )
        rings.append(ring)
    verts = np.vstack(rings + [centre[None]])
    faces = []
    for k in range(n_along):
        for i in range(n_around):
            a, b = k * n_around + i, k * n_around + (i + 1) % n_around
            c, d = a + n_around, b + n_around
            faces += [[a, b, d], [a, d, c]]
    cap = len(verts) - 1
    last = n_along * n_around
    faces += [[last + i, last + (i + 1) % n_around, cap] for i in range(n_around)]
    faces = np.array(faces)
    # Orient outward: the first ring's normal must point away from the axis.
    tri = verts[faces[0]]
    normal = np.cross(tri[1] - tri[0], tri[2] - tri[0])
    if np.dot(normal, tri.mean(0) - (frame.wrist - start * frame.distal)) < 0:
        faces = faces[:, ::-1]
    return verts, faces


def _render(
    rng,
    cfg: SynthConfig,
    meshes: dict[str, tuple[np.ndarray, np.ndarray]],
    kp: dict[str, np.ndarray],
    camera: Camera,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (RGB image uint8, labels, depth of the visible surface in metres)."""
    size = cfg.image_size
    base = rd.SKIN_TONES[rng.integers(len(rd.SKIN_TONES))]
    skin = np.clip(base * rng.uniform(0.9, 1.1, 3), 0, 1)
    layers = [
        rd.MeshLayer(
            meshes[s][0],
            meshes[s][1],
            skin * rng.uniform(0.97, 1.03, 3),
            rd.LABEL_LEFT if s == "left" else rd.LABEL_RIGHT,
        )
        for s in HAND_SIDES
    ]
    if rng.random() < cfg.forearm_prob:
        sleeve = rng.random(3) if rng.random() < cfg.sleeve_prob else None
        sleeve_start = rng.uniform(0.03, 0.12)
        hw, ht = rng.uniform(0.024, 0.030), rng.uniform(0.017, 0.021)
        for s in HAND_SIDES:
            if sleeve is None:
                v, f = _forearm_mesh(kp[s], s, 0.0, 0.3, hw, ht)
                layers.append(rd.MeshLayer(v, f, skin, rd.LABEL_ARM))
            else:
                v, f = _forearm_mesh(kp[s], s, 0.0, sleeve_start + 0.01, hw, ht, n_along=1)
                layers.append(rd.MeshLayer(v, f, skin, rd.LABEL_ARM))
                v, f = _forearm_mesh(kp[s], s, sleeve_start, 0.3, hw * 1.25, ht * 1.3)
                layers.append(rd.MeshLayer(v, f, sleeve, rd.LABEL_ARM))
    noise = (0.92 + 0.16 * rd._value_noise(rng, size, 24)).astype(np.float32)
    rgb, labels, depth_m = rd.shade_layers(layers, camera.K, size, rd.Lighting.sample(rng), noise)
    background = rd.random_background(rng, size)
    drawn = labels > 0
    img = np.where(drawn[..., None], rgb, background)
    if rng.random() < cfg.occluder_prob:
        hands = (labels == rd.LABEL_LEFT) | (labels == rd.LABEL_RIGHT)
        colour, occ = rd.occluder_layer(rng, size, hands)
        img[occ] = colour[occ]
        labels[occ] = rd.LABEL_OCCLUDER
        depth_m = np.where(occ, np.inf, depth_m)
    return rd.camera_effects(rng, img), labels, depth_m


def _occupancy_samples(
    rng, cfg: SynthConfig, side: str, joints: np.ndarray, field_fn, verts, faces
) -> OccupancySamples:
    halo = canonicalize_hand(joints, side)
    uniform = rng.uniform(-BOX_HALF_NORM, BOX_HALF_NORM, size=(cfg.n_uniform, 3))
    on_surface = surface_points(verts, faces, cfg.n_surface, rng)
    near = posed_m_to_canon_norm(torch.as_tensor(on_surface), halo.root_rot_mat, halo.wrist_m, side).numpy()
    near = near + rng.normal(0, cfg.surface_sigma_norm, size=near.shape)
    points = np.vstack([uniform, near]).astype(np.float32)
    posed = canon_norm_to_posed_m(
        torch.as_tensor(points, dtype=torch.float64), halo.root_rot_mat, halo.wrist_m, side
    )
    raw, resolved = field_fn(posed)
    return OccupancySamples(points, (resolved < 0).numpy(), (raw < 0).numpy(), cfg.n_uniform)


def generate_sample(seed: int, config: SynthConfig | None = None) -> SynthSample:
    """One synthetic two-hand training sample, a deterministic function of ``seed``."""
    cfg = config or SynthConfig()
    rng = np.random.default_rng(seed)
    with torch_threads(1), torch.no_grad():
        scene = posed_scene(rng, cfg)
        kp = {"left": scene.keypoints_left_m, "right": scene.keypoints_right_m}
        models = scene.hand_models()
        fields = {s: _hand_fields(models, s) for s in HAND_SIDES}
        meshes = {}
        for s in HAND_SIDES:
            lo, hi = models[s].bounds_m
            pad = 2 * cfg.voxel_m
            meshes[s] = extract_surface(lambda p, s=s: fields[s](p)[1], lo - pad, hi + pad, cfg.voxel_m)
        all_verts = np.vstack([meshes[s][0] for s in HAND_SIDES])
        focal = rng.uniform(*cfg.focal_range_px)
        camera = rd.crop_camera(
            all_verts, focal, (rng.uniform(300, 700), rng.uniform(200, 500)), cfg.image_size
        )
        image, labels, depth_m = _render(rng, cfg, meshes, kp, camera)
        occupancy = {s: _occupancy_samples(rng, cfg, s, kp[s], fields[s], *meshes[s]) for s in HAND_SIDES}
        keypoints = TwoHandKeypoints(left=kp["left"].copy(), right=kp["right"].copy())
        noisy = perturb_keypoints(keypoints, rng, cfg.noise)
    return SynthSample(
        seed=int(seed),
        image=image,
        camera=camera,
        keypoints=keypoints,
        noisy_keypoints=noisy,
        occupancy=occupancy,
        shapes={"left": scene.shape_left, "right": scene.shape_right},
        interaction=scene.interaction,
        overlap_depth_m=float(scene.overlap_depth_m),
        labels=labels,
        depth_m=depth_m.astype(np.float32),
        meshes={s: HandMesh(meshes[s][0], meshes[s][1]) for s in HAND_SIDES} if cfg.keep_meshes else None,
    )


# ----------------------------------------------------------------------------------------
# Disk format: <stem>.png (image) + <stem>.npz (everything else)
# ----------------------------------------------------------------------------------------
def save_sample(sample: SynthSample, directory: str | Path, stem: str | None = None) -> Path:
    """Write ``<stem>.png`` and ``<stem>.npz`` into ``directory``; returns the npz path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{sample.seed:08d}"
    save_image_rgb(directory / f"{stem}.png", sample.image)  # before the npz: an npz means a complete sample
    arrays = {
        "seed": np.int64(sample.seed),
        "camera_K": sample.camera.K.astype(np.float64),
        "image_size": np.array([sample.camera.width, sample.camera.height]),
        "labels": sample.labels,
        "interaction": np.array(sample.interaction),
        "overlap_depth_m": np.float64(sample.overlap_depth_m),
    }
    if sample.depth_m is not None:
        # float16 keeps ~0.5 mm at 1 m, far below a pixel's footprint; inf stays inf.
        arrays["depth_m"] = sample.depth_m.astype(np.float16)
    for s in HAND_SIDES:
        occ = sample.occupancy[s]
        arrays |= {
            f"joints_{s}": sample.keypoints.hand(s),
            f"noisy_joints_{s}": sample.noisy_keypoints.hand(s),
            f"points_{s}": occ.points_canon_norm,
            f"occ_{s}": occ.occupancy,
            f"occ_raw_{s}": occ.occupancy_raw,
            f"n_uniform_{s}": np.int64(occ.n_uniform),
            f"shape_{s}": sample.shapes[s].as_vector(),
        }
        if sample.meshes is not None:
            arrays |= {f"verts_{s}": sample.meshes[s].vertices, f"faces_{s}": sample.meshes[s].faces}
    path = directory / f"{stem}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: numpy adds no suffix
        np.savez_compressed(f, **arrays)
    return path


def load_sample(npz_path: str | Path) -> SynthSample:
    """Inverse of :func:`save_sample` (reads the PNG next to the npz)."""
    npz_path = Path(npz_path)
    image = cv2.imread(str(npz_path.with_suffix(".png")), cv2.IMREAD_COLOR)[..., ::-1].copy()
    with np.load(npz_path, allow_pickle=False) as z:
        w, h = (int(x) for x in z["image_size"])
        has_mesh = "verts_left" in z.files
        return SynthSample(
            seed=int(z["seed"]),
            image=image,
            camera=Camera(K=z["camera_K"], width=w, height=h),
            keypoints=TwoHandKeypoints(left=z["joints_left"], right=z["joints_right"]),
            noisy_keypoints=TwoHandKeypoints(left=z["noisy_joints_left"], right=z["noisy_joints_right"]),
            occupancy={
                s: OccupancySamples(
                    z[f"points_{s}"], z[f"occ_{s}"], z[f"occ_raw_{s}"], int(z[f"n_uniform_{s}"])
                )
                for s in HAND_SIDES
            },
            shapes={s: HandShapeParams.from_vector(z[f"shape_{s}"]) for s in HAND_SIDES},
            interaction=str(z["interaction"]),
            overlap_depth_m=float(z["overlap_depth_m"]),
            labels=z["labels"],
            depth_m=z["depth_m"].astype(np.float32) if "depth_m" in z.files else None,
            meshes={s: HandMesh(z[f"verts_{s}"], z[f"faces_{s}"]) for s in HAND_SIDES} if has_mesh else None,
        )


def sample_to_tensors(sample: SynthSample) -> dict[str, torch.Tensor]:
    """Training view of a sample. Keys: ``image`` (3, H, W) uint8; ``camera_K`` (3, 3);
    ``joints_{side}`` / ``noisy_joints_{side}`` (21, 3) camera-frame metres; ``points_{side}``
    (N, 3) canonical normalised; ``occ_{side}`` / ``occ_raw_{side}`` (N,) float 0/1;
    ``labels`` (H, W) uint8; ``seed``. All float tensors are float32."""
    out = {
        "image": torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))),
        "camera_K": torch.as_tensor(sample.camera.K, dtype=torch.float32),
        "labels": torch.from_numpy(sample.labels),
        "seed": torch.tensor(sample.seed),
    }
    for s in HAND_SIDES:
        occ = sample.occupancy[s]
        out |= {
            f"joints_{s}": torch.as_tensor(sample.keypoints.hand(s), dtype=torch.float32),
            f"noisy_joints_{s}": torch.as_tensor(sample.noisy_keypoints.hand(s), dtype=torch.float32),
            f"points_{s}": torch.as_tensor(occ.points_canon_norm, dtype=torch.float32),
            f"occ_{s}": torch.as_tensor(occ.occupancy, dtype=torch.float32),
            f"occ_raw_{s}": torch.as_tensor(occ.occupancy_raw, dtype=torch.float32),
        }
    return out


class SynthDataset(torch.utils.data.Dataset):
    """``length`` samples with seeds ``first_seed .. first_seed + length - 1``, generated on the
    fly (deterministic, so any split is reproducible from its seed range). Items are
    :func:`sample_to_tensors` dictionaries. Use DataLoader workers to parallelise."""

    def __init__(self, first_seed: int, length: int, config: SynthConfig | None = None):
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.first_seed, self.length, self.config = int(first_seed), int(length), config or SynthConfig()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return sample_to_tensors(generate_sample(self.first_seed + index, self.config))
