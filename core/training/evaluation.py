"""Evaluation of the reconstruction pipeline as users run it (through the engine), laid out
like the paper's tables:

* Table 1 (meshes, ground-truth keypoints): rows ``HALO`` (keypoints only), ``I``, ``I+R``;
* with noisy keypoints: ``K+I``, ``K+I+R`` (network K refines the keypoints first);
* Table 2: penetration volume between the two hands (cm^3) for every row;
* Table 4: keypoint MPJPE (mm) of the noisy input and after K.

Per hand, after **middle-MCP alignment** (prediction and ground truth each translated so that
their own middle MCP -- the keypoints used to reconstruct, resp. the ground truth -- is at the
origin; ../shared/reference/official_code.md §F.1):

* **IoU** over ``n_points`` (100k, as the reference evaluator) uniform points; the reference
  draws them in the canonical cube, we draw them in the ground-truth hand's box grown by
  ``IOU_BOX_MARGIN_M`` on every side (the same ratio of volumes, a tighter estimate; parts of a
  prediction outside that box are not counted). Ground truth = the exact contact-resolved
  occupancy of the synthetic scene; prediction = the engine's inside test (its occupancy
  grid at the threshold that drew the mesh).
* **Chamfer-L1** in mm: ½ (accuracy + completeness) between ``n_points`` surface samples of
  each mesh (area-weighted), nearest neighbours by KD-tree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy.spatial import cKDTree

from core.engine.engine import Engine
from core.engine.settings import ReconstructionSettings
from core.errors import InputError
from core.hand.joints import HAND_SIDES, MANO_MIDDLE_MCP
from core.training.image_shuffle import with_partner_images
from core.types import Camera, HandMesh, Reconstruction, TwoHandKeypoints

IOU_BOX_MARGIN_M = 0.02
ROW_NAMES = ("HALO", "I", "I+R", "K+I", "K+I+R")
# Network K alone: its keypoints' MPJPE (Table 4) without meshes, for when only K changed. The
# K+I row gives the same figure (it reconstructs from K's keypoints) where it runs.
K_ONLY_ROW = "K"
GT_ROWS = ("HALO", "I", "I+R")


@dataclass
class EvalSample:
    """One test sample with its ground truth (camera frame, metres)."""

    name: str
    image: np.ndarray
    camera: Camera
    keypoints: TwoHandKeypoints  # ground truth
    noisy_keypoints: TwoHandKeypoints
    meshes: dict[str, HandMesh]  # ground-truth surfaces (contact-resolved)
    occupancy: Callable[[str, np.ndarray], np.ndarray]  # (side, (M, 3) camera m) -> (M,) bool


@dataclass
class HandScores:
    iou: float
    cd_mm: float


@dataclass
class RowScores:
    """Per-sample values of one row (hands pooled)."""

    iou: list[float] = field(default_factory=list)
    cd_mm: list[float] = field(default_factory=list)
    pen_cm3: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failures: int = 0  # reconstructions the engine refused (e.g. K collapsed the keypoints)

    def summary(self) -> dict[str, float]:
        mean = lambda v: float(np.mean(v)) if v else float("nan")
        return {"iou": mean(self.iou), "cd_mm": mean(self.cd_mm), "pen_cm3": mean(self.pen_cm3),
                "seconds": mean(self.seconds), "failures": self.failures}  # fmt: skip


# ----------------------------------------------------------------------------------------
# Pure metrics
# ----------------------------------------------------------------------------------------
def surface_samples(mesh: HandMesh, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` area-weighted points on a mesh (empty mesh: no points)."""
    if mesh is None or mesh.is_empty:
        return np.zeros((0, 3))
    tri = np.asarray(mesh.vertices, np.float64)[np.asarray(mesh.faces)]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        return np.zeros((0, 3))
    idx = rng.choice(len(tri), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    return (tri[idx] * w[..., None]).sum(1)


def chamfer_l1_mm(pred_points_m: np.ndarray, gt_points_m: np.ndarray, empty_mm: float = 100.0) -> float:
    """½ (mean pred->gt + mean gt->pred nearest distance), mm; ``empty_mm`` for an empty prediction."""
    if len(pred_points_m) == 0 or len(gt_points_m) == 0:
        return float(empty_mm)
    accuracy = cKDTree(gt_points_m).query(pred_points_m, workers=1)[0].mean()
    completeness = cKDTree(pred_points_m).query(gt_points_m, workers=1)[0].mean()
    return float(500.0 * (accuracy + completeness))


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def mpjpe_mm(pred_m: np.ndarray, gt_m: np.ndarray) -> float:
    """Mean per-joint error (mm) of (21, 3) ``mano`` keypoints after middle-MCP alignment."""
    p = np.asarray(pred_m) - np.asarray(pred_m)[MANO_MIDDLE_MCP]
    g = np.asarray(gt_m) - np.asarray(gt_m)[MANO_MIDDLE_MCP]
    return float(1000.0 * np.linalg.norm(p - g, axis=-1).mean())


def iou_points(gt_mesh: HandMesh, n: int, rng: np.random.Generator) -> np.ndarray:
    lo = gt_mesh.vertices.min(0) - IOU_BOX_MARGIN_M
    hi = gt_mesh.vertices.max(0) + IOU_BOX_MARGIN_M
    return rng.uniform(lo, hi, size=(n, 3))


# ----------------------------------------------------------------------------------------
# Synthetic test samples
# ----------------------------------------------------------------------------------------
def synthetic_samples(first_seed: int, count: int) -> Iterator[EvalSample]:
    """Test samples ``first_seed .. first_seed + count - 1`` of the synthetic generator with
    their exact contact-resolved occupancy (the scene's signed distances)."""
    from core.synth.samples import SynthConfig, generate_sample, ground_truth_scene, scene_occupancy

    cfg = SynthConfig(keep_meshes=True)
    for seed in range(first_seed, first_seed + count):
        sample = generate_sample(seed, cfg)
        scene = ground_truth_scene(seed, cfg)  # the same draws: its exact occupancy
        if not np.allclose(scene.keypoints_left_m, sample.keypoints.left):
            raise RuntimeError("the synthetic scene could not be reproduced for its ground truth")
        inside = scene_occupancy(scene)

        def occupancy(side: str, points_cam_m: np.ndarray, inside=inside) -> np.ndarray:
            return inside[side](points_cam_m)

        yield EvalSample(
            f"synthetic:{seed}", sample.image, sample.camera, sample.keypoints, sample.noisy_keypoints,
            sample.meshes, occupancy,
        )  # fmt: skip


# ----------------------------------------------------------------------------------------
# Evaluation through the engine
# ----------------------------------------------------------------------------------------
def score_hand(
    side: str, sample: EvalSample, rec: Reconstruction, fields, n_points: int, seed: tuple[int, ...]
) -> HandScores:
    """IoU and Chamfer of one hand. ``seed`` fixes the ground-truth side's random points (IoU
    points, surface samples) independently of the reconstruction, so every row of a table is
    scored on the same points of a sample: row differences are paired, not sampling noise."""
    gt_mesh = sample.meshes[side]
    mcp_gt = sample.keypoints.hand(side)[MANO_MIDDLE_MCP]
    mcp_pred = rec.keypoints.hand(side)[MANO_MIDDLE_MCP]
    iou_rng, gt_rng, pred_rng = (np.random.default_rng((*seed, HAND_SIDES.index(side), k)) for k in range(3))
    pts_gt = iou_points(gt_mesh, n_points, iou_rng)
    occ_gt = sample.occupancy(side, pts_gt)
    occ_pred = fields[side].contains(pts_gt - mcp_gt + mcp_pred)
    mesh = getattr(rec, side)
    cd = chamfer_l1_mm(
        surface_samples(mesh, n_points, pred_rng) - mcp_pred,
        surface_samples(gt_mesh, n_points, gt_rng) - mcp_gt,
    )
    return HandScores(iou(occ_pred, occ_gt), cd)


@dataclass
class EvalConfig:
    resolution: int = 128
    anchor_resolution: int = 64
    n_points: int = 100_000
    rows: tuple[str, ...] = ROW_NAMES
    seed: int = 0
    resolve_contact: bool = False  # the engine's contact resolution on every row (ours)


@dataclass
class EvalResult:
    rows: dict[str, dict[str, float]]
    mpjpe_mm: dict[str, float]
    count: int
    config: dict
    seconds: float
    # --shuffle-images: the image-reading rows again, each sample on another sample's image
    rows_shuffled_image: dict[str, dict[str, float]] | None = None
    mpjpe_mm_shuffled_image: dict[str, float] | None = None

    def to_json(self) -> dict:
        out = {"rows": self.rows, "mpjpe_mm": self.mpjpe_mm, "count": self.count, "config": self.config,
               "seconds": round(self.seconds, 1)}  # fmt: skip
        if self.rows_shuffled_image is not None:
            out["rows_shuffled_image"] = self.rows_shuffled_image
            out["mpjpe_mm_shuffled_image"] = self.mpjpe_mm_shuffled_image
        return out


@dataclass(frozen=True)
class RowPlan:
    """How one row reconstructs: which engine, from which keypoints, with which settings."""

    engine: Engine | None  # None: these weights lack a network of the row
    keypoints: str  # "gt" | "noisy"
    settings: ReconstructionSettings

    @property
    def reads_image(self) -> bool:
        return self.engine is not None and self.engine.backend.needs_image


def row_plans(im2hands: Engine | None, halo: Engine | None, cfg: EvalConfig) -> dict[str, RowPlan]:
    base = ReconstructionSettings(
        resolution=cfg.resolution,
        preview_resolution=min(64, cfg.resolution),
        anchor_resolution=min(cfg.anchor_resolution, cfg.resolution),
        resolve_contact=cfg.resolve_contact,
    )
    has_k = im2hands is not None and im2hands.backend.has_keypoint_refiner
    has_r = im2hands is not None and im2hands.backend.has_refinement
    no_r = base.with_(use_refinement=False)
    with_k = base.with_(use_keypoint_refiner=True)
    return {
        "HALO": RowPlan(halo, "gt", base),
        "I": RowPlan(im2hands, "gt", no_r),
        "I+R": RowPlan(im2hands if has_r else None, "gt", base),
        "K+I": RowPlan(im2hands if has_k else None, "noisy", with_k.with_(use_refinement=False)),
        "K+I+R": RowPlan(im2hands if has_k and has_r else None, "noisy", with_k),
    }


def score_row(
    scores: RowScores, plan: RowPlan, sample: EvalSample, cfg: EvalConfig, index: int
) -> Reconstruction | None:
    """Reconstruct ``sample`` as the row does and add its scores; None when the engine refused
    (counted as empty meshes: IoU 0, Chamfer at its cap, no penetration)."""
    kp = sample.keypoints if plan.keypoints == "gt" else sample.noisy_keypoints
    t = time.perf_counter()
    try:
        rec, fields = plan.engine.reconstruct_with_fields(sample.image, sample.camera, kp, plan.settings)
    except InputError:
        scores.failures += 1
        scores.iou += [0.0, 0.0]
        scores.cd_mm += [chamfer_l1_mm(np.zeros((0, 3)), np.zeros((0, 3)))] * 2
        scores.pen_cm3.append(0.0)
        return None
    scores.seconds.append(time.perf_counter() - t)
    hands = [score_hand(s, sample, rec, fields, cfg.n_points, (cfg.seed, index)) for s in HAND_SIDES]
    scores.iou += [h.iou for h in hands]
    scores.cd_mm += [h.cd_mm for h in hands]
    scores.pen_cm3.append(rec.penetration_volume_cm3)
    return rec


def _k_errors(rec: Reconstruction | None, sample: EvalSample) -> list[float]:
    """MPJPE of K's keypoints per hand (none where the engine refused the input)."""
    if rec is None:
        return []
    return [mpjpe_mm(rec.keypoints.hand(s), sample.keypoints.hand(s)) for s in HAND_SIDES]


def _k_alone_errors(engine: Engine, shown: EvalSample, truth: EvalSample) -> list[float]:
    """MPJPE per hand of network K alone, run on ``shown`` (its image, camera and noisy
    keypoints) and scored against ``truth``'s keypoints."""
    refined = engine.refine_keypoints(shown.image, shown.camera, shown.noisy_keypoints)
    return [mpjpe_mm(refined.hand(s), truth.keypoints.hand(s)) for s in HAND_SIDES]


def evaluate(
    samples: Iterable[EvalSample],
    *,
    im2hands: Engine | None,
    halo: Engine | None,
    config: EvalConfig | None = None,
    progress: Callable[[int, str], None] | None = None,
    shuffle_images: bool = False,
) -> EvalResult:
    """Every row of ``config.rows`` whose networks are present on every sample; with
    ``shuffle_images`` also every row that reads the image on another sample's image
    (:mod:`core.training.image_shuffle`; needs at least 2 samples).

    Long: the loop over samples and rows with its accumulators."""
    cfg = config or EvalConfig()
    plans = row_plans(im2hands, halo, cfg)
    rows = {name: RowScores() for name in cfg.rows if name in plans and plans[name].engine is not None}
    # K's MPJPE comes from the first row that runs K (K+I, else K+I+R: the same keypoints)
    k_row = next((name for name in ("K+I", "K+I+R") if name in rows), None)
    k_alone = K_ONLY_ROW in cfg.rows and k_row is None and plans["K+I"].engine is not None
    shuffled = {name: RowScores() for name in rows if shuffle_images and plans[name].reads_image}
    mpjpe = {"noisy": [], "refined": [], "refined_shuffled": []}
    stream = with_partner_images(samples) if shuffle_images else ((s, None) for s in samples)
    t0, count = time.perf_counter(), 0

    def score_rows(shown: EvalSample, truth: EvalSample, row_scores: dict, k_key: str) -> None:
        """The rows on ``shown`` (the sample, or it on another image), scored against
        ``truth``; K's MPJPE goes to ``mpjpe[k_key]``."""
        for name, scores in row_scores.items():
            rec = score_row(scores, plans[name], shown, cfg, count)
            if name == k_row:
                mpjpe[k_key] += _k_errors(rec, truth)
        if k_alone:
            mpjpe[k_key] += _k_alone_errors(im2hands, shown, truth)

    for sample, partner_image in stream:
        count += 1
        score_rows(sample, sample, rows, "refined")
        if shuffled or (k_alone and shuffle_images):
            # The one seam of the ablation: the sample's own keypoints, camera and ground truth
            # with the other sample's pixels (the engine's feature cache is keyed by the pixels).
            if partner_image.shape != sample.image.shape:
                raise InputError(
                    f"--shuffle-images: {sample.name}'s image is {sample.image.shape} but the image "
                    f"swapped in is {partner_image.shape}; shuffling needs images of one size"
                )
            score_rows(replace(sample, image=partner_image), sample, shuffled, "refined_shuffled")
        # the input's error on every sample (K's output only where the engine accepted it)
        for s in HAND_SIDES:
            mpjpe["noisy"].append(mpjpe_mm(sample.noisy_keypoints.hand(s), sample.keypoints.hand(s)))
        if progress is not None:
            progress(count, sample.name)
    if count == 0:
        raise ValueError("nothing to evaluate: no samples")
    mean = lambda v: float(np.mean(v)) if v else math.nan
    result = EvalResult(
        {name: scores.summary() for name, scores in rows.items()},
        {"noisy": mean(mpjpe["noisy"]), "refined": mean(mpjpe["refined"])},
        count,
        asdict(cfg) | {"shuffle_images": shuffle_images},
        time.perf_counter() - t0,
    )
    if shuffle_images:
        result.rows_shuffled_image = {name: scores.summary() for name, scores in shuffled.items()}
        result.mpjpe_mm_shuffled_image = {
            "noisy": result.mpjpe_mm["noisy"],  # the input does not depend on the image
            "refined": mean(mpjpe["refined_shuffled"]),
        }
    return result


# ----------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------
def format_tables(result: EvalResult) -> str:
    """Plain-text tables laid out like the paper's Tables 1, 2 and 4."""
    lines = [f"Evaluated on {result.count} samples ({result.seconds:.0f} s)", ""]
    if result.config.get("resolve_contact"):
        note = "Every row with the engine's contact resolution (--resolve-contact): not the networks alone"
        lines[-1:] = [note, ""]
    lines += ["Table 1 -- reconstruction (per hand, middle-MCP aligned)",
              f"{'Method':<10}{'keypoints':<11}{'IoU (%)':>9}{'CD (mm)':>9}"]  # fmt: skip
    for name in ROW_NAMES:
        if name in result.rows:
            r = result.rows[name]
            kind = "GT" if name in GT_ROWS else "noisy"
            lines.append(f"{name:<10}{kind:<11}{100 * r['iou']:>9.2f}{r['cd_mm']:>9.2f}")
    lines += ["", "Table 2 -- interpenetration", f"{'Method':<10}{'Pen. volume (cm^3)':>20}"]
    for name in ROW_NAMES:
        if name in result.rows:
            lines.append(f"{name:<10}{result.rows[name]['pen_cm3']:>20.3f}")
    lines += ["", "Table 4 -- keypoints (MPJPE, mm, middle-MCP aligned)", f"{'Input':<16}{'MPJPE':>8}"]
    noisy, refined = result.mpjpe_mm.get("noisy", math.nan), result.mpjpe_mm.get("refined", math.nan)
    lines.append(f"{'noisy':<16}{noisy:>8.2f}")
    lines.append(f"{'refined by K':<16}{refined:>8.2f}" if _ran_k(result) else "(K not run: no K row asked)")
    if result.rows_shuffled_image is not None:
        lines += ["", *format_image_ablation(result)]
    return "\n".join(lines)


def _ran_k(result: EvalResult) -> bool:
    """Whether K ran (a K row was asked): its MPJPE is then a number, not NaN."""
    return not math.isnan(result.mpjpe_mm.get("refined", math.nan))


def format_image_ablation(result: EvalResult) -> list[str]:
    """The rows that read the image, on the sample's own image and on another sample's
    (``evaluate --shuffle-images``), with the difference shuffled - true."""
    lines = ["Image ablation -- each sample on another test sample's image (its own keypoints)",
             f"{'Method':<8}" + "".join(f"{h:>30}" for h in ("IoU (%) true/shuf/diff",
             "CD (mm) true/shuf/diff", "Pen. (cm^3) true/shuf/diff"))]  # fmt: skip
    metrics = (("iou", 100.0, "{:>9.2f}"), ("cd_mm", 1.0, "{:>9.2f}"), ("pen_cm3", 1.0, "{:>9.3f}"))
    for name in ROW_NAMES:
        if name not in result.rows_shuffled_image:
            continue
        true, shuffled = result.rows[name], result.rows_shuffled_image[name]
        cells = ""
        for key, scale, fmt in metrics:
            a, b = scale * true[key], scale * shuffled[key]
            cells += "   " + fmt.format(a) + fmt.format(b) + fmt.replace(">", ">+").format(b - a)
        lines.append(f"{name:<8}{cells}")
    if not result.rows_shuffled_image:
        lines.append("(no row of these weights reads the image)")
    if not _ran_k(result):
        return lines
    refined = result.mpjpe_mm.get("refined", math.nan)
    shuffled_k = (result.mpjpe_mm_shuffled_image or {}).get("refined", math.nan)
    change = 100.0 * (shuffled_k / refined - 1.0) if refined else math.nan
    lines.append(
        f"K's MPJPE (mm): true {refined:.2f}, shuffled {shuffled_k:.2f}, "
        f"diff {shuffled_k - refined:+.2f} ({change:+.1f} %)"
    )
    return lines
