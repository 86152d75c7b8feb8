"""Training datasets for networks K, I, R and the HALO-only baseline.

Every dataset item is a dictionary of tensors with the same keys, whatever the source:

* ``image`` (3, 256, 256) uint8 RGB crop, ``camera_K`` (3, 3) its intrinsics (camera frame);
* ``joints_{side}`` (21, 3) float64: ground-truth keypoints, camera frame, metres, ``mano`` order
  (float64: the canonicalisation is ill-conditioned near its clipped angles, float32 input
  moves part matrices by up to 1e-3);
* ``noisy_joints_{side}`` (21, 3): detector-like keypoints (input of network K);
* ``points_{side}`` (N, 3): query points in the hand's HALO canonical frame, normalised units;
* ``occ_{side}`` (N,): ground-truth occupancy (0/1, contact-resolved) at those points;
* ``anchors_{side}_mm`` (A, 3): surface anchors for network R, millimetres, wrist-relative,
  posed frame (only when ``num_anchors > 0``).

Items are addressed by ``(index, draw)``: the random choices of an item (point subsample,
anchor sample) come from a generator seeded by ``(seed, index, draw)``, so an epoch replayed
after a resume yields exactly the same tensors (the trainer passes the epoch as ``draw``).

Sources: :class:`SynthFolderDataset` (samples written by ``python main.py synth --out DIR
--meshes``), :class:`SynthOnTheFlyDataset` (generated from seeds, for tests and small runs),
:class:`InterHandDataset` (the reference InterHand2.6M layout, ../shared/reference/official_code.md §E.3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from core.engine.image_input import crop_for_keypoints, make_network_crop
from core.errors import InputError
from core.hand.joints import HAND_SIDES, MANO_WRIST
from core.synth.detector_noise import (
    DetectorNoise,
    apply_detector_noise,
    draws_detector_terms,
    training_noise,
)
from core.synth.samples import OccupancySamples, SynthConfig, SynthSample, generate_sample, surface_points
from core.types import Camera, HandMesh, TwoHandKeypoints

ANCHOR_NOISE_MM = 2.0  # jitter of anchors sampled on the ground-truth surface (see sample_anchors)


class DatasetError(InputError):
    """A training data folder that cannot be read."""


@dataclass(frozen=True)
class ItemSpec:
    """What each item carries: ``points_per_hand`` query points (all when 0), ``num_anchors``
    surface anchors per hand for R (none when 0) and the base ``seed`` of the random draws."""

    points_per_hand: int = 2048
    num_anchors: int = 0
    seed: int = 0
    crop_with: str = "gt"  # re-crop the image as the engine does around these keypoints: gt|noisy|none
    needs_image: bool = True  # False: items carry a black image (keypoint-only networks)
    # Share of the points drawn from the contact set (raw solid inside, contact-resolved
    # outside: where the other hand flattened this one), the part that R must learn.
    contact_fraction: float = 0.0
    # Synthetic sources only: draw fresh detector-like noisy keypoints for every (index, draw)
    # instead of the stored ones (ours, for K: one stored draw per sample is memorised fast).
    renoise: bool = False
    # Synthetic sources only: detector-like errors (core.synth.detector_noise) added to the
    # noisy keypoints of every (index, draw), after the jitter (ours, for K).
    detector_noise: DetectorNoise | None = None

    @property
    def adds_detector_noise(self) -> bool:
        return self.detector_noise is not None and self.detector_noise.enabled


def item_rng(spec: ItemSpec, index: int, draw: int) -> np.random.Generator:
    return np.random.default_rng([int(spec.seed), int(index), int(draw)])


def contact_subsample(
    points: np.ndarray,
    occ: np.ndarray,
    occ_raw: np.ndarray,
    n: int,
    fraction: float,
    rng: np.random.Generator,
):
    """``n`` points of which up to ``fraction * n`` lie in the contact set (``occ_raw`` and
    not ``occ``), the rest drawn as :func:`subsample_points` does."""
    contact = np.flatnonzero(occ_raw.astype(bool) & ~occ.astype(bool))
    k = min(len(contact), int(round(fraction * n)))
    if k == 0:
        return subsample_points(points, occ, n, rng)
    picked = rng.choice(contact, size=k, replace=False)
    rest = rng.choice(len(points), size=n - k, replace=n - k > len(points))
    idx = np.concatenate([picked, rest])
    return points[idx], occ[idx]


def subsample_points(points: np.ndarray, occ: np.ndarray, n: int, rng: np.random.Generator):
    """``n`` of the stored points without replacement (with replacement when fewer are
    stored); the stored mix (half uniform, half near-surface) is kept on average."""
    if n <= 0 or n == len(points):
        return points, occ
    idx = rng.choice(len(points), size=n, replace=n > len(points))
    return points[idx], occ[idx]


def sample_anchors(
    verts_cam_m: np.ndarray, faces: np.ndarray, wrist_cam_m: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """R's training anchors: ``n`` points on the ground-truth surface plus isotropic Gaussian
    noise of ``ANCHOR_NOISE_MM`` (a stand-in for the error of I's meshes, which the reference
    samples anchors from; running I for every training item would cost more than R's step),
    as millimetres relative to the wrist (posed frame, left hand not mirrored)."""
    pts = surface_points(verts_cam_m, faces, n, rng)
    pts_mm = (pts - wrist_cam_m[None]) * 1000.0
    return (pts_mm + rng.normal(0.0, ANCHOR_NOISE_MM, pts_mm.shape)).astype(np.float32)


def engine_crop(
    image: np.ndarray, camera: Camera, keypoints: TwoHandKeypoints
) -> tuple[np.ndarray, np.ndarray]:
    """The 256 x 256 crop (and its intrinsics) that the reconstruction engine feeds the
    networks for these keypoints: training on it means training on what users get."""
    joints = [keypoints.hand(s) for s in keypoints.present_sides()]
    crop = make_network_crop(image, camera, crop_for_keypoints(camera, joints))
    return crop.crop_u8, crop.cam_K_crop


def image_entries(
    image: np.ndarray, camera: Camera, keypoints: TwoHandKeypoints | None
) -> dict[str, torch.Tensor]:
    """``image`` (3, 256, 256) uint8 and ``camera_K``, re-cropped around ``keypoints`` (if given)."""
    K = camera.K
    if keypoints is not None:
        image, K = engine_crop(image, camera, keypoints)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))),
        "camera_K": torch.as_tensor(K, dtype=torch.float32),
    }


def _crop_keypoints(spec: ItemSpec, gt: TwoHandKeypoints, noisy: TwoHandKeypoints) -> TwoHandKeypoints | None:
    if spec.crop_with not in ("gt", "noisy", "none"):
        raise DatasetError(f"crop_with must be 'gt', 'noisy' or 'none', got {spec.crop_with!r}")
    return {"gt": gt, "noisy": noisy, "none": None}[spec.crop_with]


def sample_item(sample: SynthSample, spec: ItemSpec, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """The training view of one synthetic sample (see the module docstring for the keys)."""
    if spec.renoise:  # fresh jitter (+ detector-like terms) from the truth
        noisy_keypoints = training_noise(sample.keypoints, rng, spec.detector_noise)
    elif spec.adds_detector_noise and draws_detector_terms(rng, spec.detector_noise):
        # detector-like terms on top of the stored noisy keypoints
        noisy_keypoints = apply_detector_noise(sample.noisy_keypoints, rng, spec.detector_noise)
    else:
        noisy_keypoints = sample.noisy_keypoints
    out = image_entries(sample.image, sample.camera, _crop_keypoints(spec, sample.keypoints, noisy_keypoints))
    for s in HAND_SIDES:
        occ = sample.occupancy[s]
        pts, lab = contact_subsample(
            occ.points_canon_norm,
            occ.occupancy,
            occ.occupancy_raw,
            spec.points_per_hand,
            spec.contact_fraction,
            rng,
        )
        joints = np.asarray(sample.keypoints.hand(s), np.float64)
        out |= {
            f"joints_{s}": torch.as_tensor(joints, dtype=torch.float64),
            f"noisy_joints_{s}": torch.as_tensor(noisy_keypoints.hand(s), dtype=torch.float64),
            f"points_{s}": torch.as_tensor(pts, dtype=torch.float32),
            f"occ_{s}": torch.as_tensor(lab, dtype=torch.float32),
        }
        if spec.num_anchors > 0:
            if sample.meshes is None:
                raise DatasetError(
                    "network R needs the ground-truth meshes for its anchors: write the samples with "
                    "`python main.py synth --out DIR --meshes`"
                )
            mesh = sample.meshes[s]
            out[f"anchors_{s}_mm"] = torch.from_numpy(
                sample_anchors(mesh.vertices, mesh.faces, joints[MANO_WRIST], spec.num_anchors, rng)
            )
    return out


class _Addressed(torch.utils.data.Dataset):
    """Items are fetched with ``dataset[(index, draw)]`` (or a plain index: draw 0)."""

    spec: ItemSpec

    def _split(self, key) -> tuple[int, int]:
        index, draw = key if isinstance(key, tuple) else (key, 0)
        if not 0 <= int(index) < len(self):
            raise IndexError(index)
        return int(index), int(draw)


class SynthFolderDataset(_Addressed):
    """Samples saved by ``python main.py synth --out DIR`` (``<seed>.npz`` + ``<seed>.png``)."""

    def __init__(self, folder: str | Path, spec: ItemSpec | None = None, limit: int | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError(f"training data folder not found: {self.folder}")
        self.files = sorted(self.folder.glob("*.npz"))
        if limit is not None:
            self.files = self.files[: int(limit)]
        if not self.files:
            raise DatasetError(
                f"{self.folder} holds no samples (*.npz); write some with "
                "`python main.py synth --out DIR --count N --meshes`"
            )
        self.spec = spec or ItemSpec()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, draw = self._split(key)
        return sample_item(self.sample(index), self.spec, item_rng(self.spec, index, draw))

    def sample(self, index: int) -> SynthSample:
        """Sample ``index`` as stored, read as :func:`load_sample` does but only with what the
        items need (meshes and image are the slow parts of a sample file)."""
        path = self.files[index]
        need_image = self.spec.needs_image
        with np.load(path, allow_pickle=False) as z:
            w, h = (int(x) for x in z["image_size"])
            meshes = None
            if self.spec.num_anchors > 0 and "verts_left" in z.files:
                meshes = {s: HandMesh(z[f"verts_{s}"], z[f"faces_{s}"]) for s in HAND_SIDES}
            occupancy = {
                s: OccupancySamples(
                    z[f"points_{s}"], z[f"occ_{s}"], z[f"occ_raw_{s}"], int(z[f"n_uniform_{s}"])
                )
                for s in HAND_SIDES
            }
            keypoints = TwoHandKeypoints(left=z["joints_left"], right=z["joints_right"])
            noisy = TwoHandKeypoints(left=z["noisy_joints_left"], right=z["noisy_joints_right"])
            camera = Camera(K=z["camera_K"], width=w, height=h)
        image = np.zeros((h, w, 3), np.uint8)
        if need_image:
            bgr = cv2.imread(str(path.with_suffix(".png")), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DatasetError(f"cannot read the image of {path.name}")
            image = np.ascontiguousarray(bgr[..., ::-1])
        return SynthSample(
            seed=0, image=image, camera=camera, keypoints=keypoints, noisy_keypoints=noisy,
            occupancy=occupancy, shapes={}, interaction="", overlap_depth_m=0.0, labels=None, meshes=meshes,
        )  # fmt: skip


class SynthOnTheFlyDataset(_Addressed):
    """``length`` samples generated from seeds ``first_seed ..`` (about 0.5 s CPU each)."""

    def __init__(self, first_seed: int, length: int, spec: ItemSpec | None = None, points: int = 2048):
        if length < 1:
            raise DatasetError(f"the synthetic dataset needs at least one sample, got length={length}")
        self.first_seed, self.length = int(first_seed), int(length)
        self.spec = spec or ItemSpec()
        self.config = SynthConfig(n_uniform=points, n_surface=points, keep_meshes=self.spec.num_anchors > 0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, draw = self._split(key)
        sample = generate_sample(self.first_seed + index, self.config)
        return sample_item(sample, self.spec, item_rng(self.spec, index, draw))


# ----------------------------------------------------------------------------------------
# InterHand2.6M in the reference layout (../shared/reference/official_code.md §E.3)
# ----------------------------------------------------------------------------------------
def _read_ply_points(path: Path) -> np.ndarray:
    """Vertices of a small ASCII or binary-little-endian PLY (keypoint files of the reference)."""
    data = path.read_bytes()
    end = data.find(b"end_header")
    if end < 0:
        raise DatasetError(f"{path} is not a PLY file")
    header = data[:end].decode("ascii", "replace").splitlines()
    body = data[data.index(b"\n", end) + 1 :]
    n = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    props = [line.split() for line in header if line.startswith("property") and "list" not in line]
    if any("binary_little_endian" in line for line in header):
        types = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "float32": "<f4"}
        dtype = np.dtype([(p[2], types.get(p[1], "<f4")) for p in props])
        rows = np.frombuffer(body[: n * dtype.itemsize], dtype=dtype)
        return np.stack([rows["x"], rows["y"], rows["z"]], axis=1).astype(np.float64)
    values = np.array([[float(v) for v in line.split()[:3]] for line in body.decode().splitlines()[:n]])
    return values


def _read_obj_vertices(path: Path) -> tuple[np.ndarray, np.ndarray]:
    verts, faces = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            faces.append([int(x.split("/")[0]) - 1 for x in line.split()[1:4]])
    return np.asarray(verts, np.float64), np.asarray(faces, np.int64)


def _read_annotation(path: Path) -> dict:
    """One InterHand2.6M annotation (JSON; the reference's pickles are never read)."""
    try:
        anno = json.loads(path.read_text(encoding="utf-8"))
        cam, image = anno["camera"], anno["image"]
        for key in ("R", "t", "camera"):
            np.asarray(cam[key], np.float64)
        str(image["capture"]), str(image["frame_idx"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"{path}: not an annotation with camera.R/t/camera and image.capture/frame_idx ({exc})"
        ) from None
    return anno


class InterHandDataset(_Addressed):
    """InterHand2.6M preprocessed as the reference does (../shared/reference/official_code.md §E.3):

    ``{img_root}/{split}/img/{idx}.jpg``, ``anno/{idx}.json`` (``camera`` {``R``, ``t``,
    ``camera`` = crop K}, ``image`` {``capture``, ``frame_idx``}), keypoints in
    ``pred_joints/%07d_{side}.ply`` (world metres; ground truth or detections), anchor meshes
    in ``pred_shapes/%07d_{side}.obj`` (mm, R only), and per hand
    ``{occ_root}/{split}/points/{capture}_{frame}_{side}.npz`` (``points`` float16 in the
    canonical frame, ``occupancies`` bit-packed). Keypoints are moved to the camera frame
    (``x_cam = R x + t``); the occupancy points stay in the canonical frame, as trained."""

    def __init__(self, img_root: str | Path, occ_root: str | Path, split: str, spec: ItemSpec | None = None):
        self.img_dir = Path(img_root) / split
        self.occ_dir = Path(occ_root) / split
        for d in (self.img_dir / "img", self.img_dir / "anno", self.occ_dir / "points"):
            if not d.is_dir():
                raise DatasetError(f"InterHand2.6M folder missing: {d} (the reference layout)")
        self.length = len(list((self.img_dir / "anno").glob("*.json")))
        if self.length == 0:
            pickled = any((self.img_dir / "anno").glob("*.pkl"))
            raise DatasetError(
                f"{self.img_dir / 'anno'} holds no annotation files (*.json)"
                + (
                    "; its *.pkl files are not read (unpickling can run code): convert them to JSON "
                    "with the same keys first"
                    if pickled
                    else ""
                )
            )
        self.spec = spec or ItemSpec()
        if self.spec.renoise or self.spec.adds_detector_noise:
            raise DatasetError(
                "renoise and detector_noise draw synthetic keypoint noise; "
                "InterHand2.6M items use pred_joints"
            )

    def __len__(self) -> int:
        return self.length

    def _joints_cam(self, idx: int, side: str, kind: str, R: np.ndarray, t: np.ndarray) -> np.ndarray:
        world = _read_ply_points(self.img_dir / kind / f"{idx:07d}_{side}.ply")
        return world @ R.T + t[None]

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, draw = self._split(key)
        rng = item_rng(self.spec, index, draw)
        anno = _read_annotation(self.img_dir / "anno" / f"{index}.json")
        image = cv2.imread(str(self.img_dir / "img" / f"{index}.jpg"), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read image {index}.jpg in {self.img_dir / 'img'}")
        cam = anno["camera"]
        R = np.asarray(cam["R"], np.float64).reshape(3, 3)
        t = np.asarray(cam["t"], np.float64).reshape(3)
        K = np.asarray(cam["camera"], np.float64).reshape(3, 3)
        rgb = np.ascontiguousarray(image[..., ::-1])
        gt_dir = "gt_joints" if (self.img_dir / "gt_joints").is_dir() else "pred_joints"
        joints_all = {s: self._joints_cam(index, s, gt_dir, R, t) for s in HAND_SIDES}
        noisy_all = {s: self._joints_cam(index, s, "pred_joints", R, t) for s in HAND_SIDES}
        gt_kp = TwoHandKeypoints(left=joints_all["left"], right=joints_all["right"])
        noisy_kp = TwoHandKeypoints(left=noisy_all["left"], right=noisy_all["right"])
        camera = Camera(K=K, width=rgb.shape[1], height=rgb.shape[0])
        out = image_entries(rgb, camera, _crop_keypoints(self.spec, gt_kp, noisy_kp))
        name = f"{anno['image']['capture']}_{anno['image']['frame_idx']}"
        for s in HAND_SIDES:
            joints, noisy = joints_all[s], noisy_all[s]
            with np.load(self.occ_dir / "points" / f"{name}_{s}.npz", allow_pickle=False) as z:
                pts = z["points"].astype(np.float32)
                pts = pts + 1e-4 * rng.standard_normal(pts.shape).astype(np.float32)  # as the reference
                occ = np.unpackbits(z["occupancies"])[: len(pts)].astype(np.float32)
            pts, occ = subsample_points(pts, occ, self.spec.points_per_hand, rng)
            out |= {
                f"joints_{s}": torch.as_tensor(joints, dtype=torch.float64),
                f"noisy_joints_{s}": torch.as_tensor(noisy, dtype=torch.float64),
                f"points_{s}": torch.from_numpy(pts),
                f"occ_{s}": torch.from_numpy(occ),
            }
            if self.spec.num_anchors > 0:
                verts_mm, faces = _read_obj_vertices(self.img_dir / "pred_shapes" / f"{index:07d}_{s}.obj")
                wrist = joints[MANO_WRIST]
                verts_cam_m = (verts_mm / 1000.0) @ R.T + t[None]
                out[f"anchors_{s}_mm"] = torch.from_numpy(
                    sample_anchors(verts_cam_m, faces, wrist, self.spec.num_anchors, rng)
                )
        return out


def dataset_from_spec(data: dict, spec: ItemSpec) -> torch.utils.data.Dataset:
    """Build the dataset named by a config's ``data`` block:
    ``{"kind": "synth_folder", "path": DIR, "limit": N?}``,
    ``{"kind": "synth", "first_seed": S, "count": N, "points": P?}`` or
    ``{"kind": "interhand", "img_root": DIR, "occ_root": DIR, "split": "train"}``."""
    if not isinstance(data, dict):
        raise DatasetError(f"the config's 'data' block must be an object with a 'kind', got {data!r}")
    kind = data.get("kind")
    if kind == "synth_folder":
        return SynthFolderDataset(data["path"], spec, data.get("limit"))
    if kind == "synth":
        return SynthOnTheFlyDataset(
            int(data["first_seed"]), int(data["count"]), spec, int(data.get("points", 2048))
        )
    if kind == "interhand":
        return InterHandDataset(data["img_root"], data["occ_root"], data.get("split", "train"), spec)
    raise DatasetError(f"unknown data kind {kind!r}; use 'synth_folder', 'synth' or 'interhand'")
