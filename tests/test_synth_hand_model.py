"""The procedural hand solid: primitive SDFs, signs, distance bound, watertight mesh, anatomy, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from core.synth.hand_model import HandFrame, HandModel
from core.synth.pose_sampler import (
    JOINT_LIMITS_RAD,
    POSE_STYLES,
    HandPose,
    pose_keypoints,
    sample_pose,
    sample_shape,
)
from core.synth.samples import torch_threads
from core.synth.sdf_primitives import polygon_edges, round_cone_sdf, smooth_min, swept_polygon_sdf
from core.synth.surface import extract_surface
from core.synth.template import HandShapeParams

FLAT = HandPose(np.zeros((5, 4)))


def _template_model(side="right", shape=None, pose=FLAT):
    shape = shape or HandShapeParams()
    return HandModel.from_keypoints(pose_keypoints(shape, pose, side), side, shape), pose_keypoints(
        shape, pose, side
    )


# ---------------------------------------------------------------------------- primitives
def test_round_cone_matches_brute_force_union_of_interpolated_spheres():
    rng = np.random.default_rng(0)
    a = torch.tensor([[0.0, 0.0, 0.0], [0.01, -0.02, 0.03]], dtype=torch.float64)
    b = torch.tensor([[0.05, 0.0, 0.0], [0.0, 0.02, 0.0]], dtype=torch.float64)
    ra = torch.tensor([0.010, 0.006], dtype=torch.float64)
    rb = torch.tensor([0.007, 0.009], dtype=torch.float64)
    pts = torch.as_tensor(rng.uniform(-0.04, 0.08, size=(3000, 3)))
    d = round_cone_sdf(pts, a, b, ra, rb)
    s = torch.linspace(0, 1, 4001, dtype=torch.float64)
    for c in range(2):
        centres = a[c] + s[:, None] * (b[c] - a[c])
        radii = ra[c] + s * (rb[c] - ra[c])
        brute = (torch.cdist(pts, centres) - radii).amin(1)  # exact outside; its sign is exact inside
        outside = brute > 0
        assert torch.equal(d[:, c] < 0, brute < 0)
        assert float((d[outside, c] - brute[outside]).abs().max()) < 2e-6


def test_swept_triangle_matches_brute_force_distance():
    rng = np.random.default_rng(1)
    verts = torch.tensor([[0.0, 0.0], [0.04, 0.0], [0.01, 0.03]], dtype=torch.float64)
    starts, ends = polygon_edges([verts], 3)
    origin = torch.tensor([[0.01, 0.02, -0.01]], dtype=torch.float64)
    rot = torch.as_tensor(trimesh.transformations.random_rotation_matrix(rng.random(3))[:3, :3])
    r = torch.tensor([0.005], dtype=torch.float64)
    pts = torch.as_tensor(rng.uniform(-0.05, 0.07, size=(2000, 3)))
    d = swept_polygon_sdf(pts, origin, rot[None], starts, ends, r)[:, 0]
    # Brute force: dense samples of the triangle in 3D.
    w = rng.dirichlet([1, 1, 1], size=60000)
    edge_t = np.linspace(0, 1, 2000)[:, None]
    v = verts.numpy()
    flat = np.vstack([w @ v] + [v[i] + edge_t * (v[(i + 1) % 3] - v[i]) for i in range(3)])
    tri3d = origin.numpy()[0] + flat @ rot.numpy()[:2]
    brute = cKDTree(tri3d).query(pts.numpy())[0] - 0.005
    sign_differs = (d.numpy() < 0) != (brute < 0)
    assert np.all(np.abs(brute[sign_differs]) < 3e-4)  # only within the sampling error of the surface
    outside = brute > 0.001
    assert np.abs(d.numpy()[outside] - brute[outside]).max() < 3e-4  # brute force sampling error


def test_smooth_min_is_below_min_and_blends_only_within_k():
    a = torch.linspace(-0.02, 0.02, 101)
    b = torch.full_like(a, 0.003)
    s = smooth_min(a, b, 0.005)
    assert torch.all(s <= torch.minimum(a, b) + 1e-12)
    far = (a - b).abs() >= 0.005
    assert torch.equal(s[far], torch.minimum(a, b)[far])


# ---------------------------------------------------------------------------- hand solid
def test_keypoints_inside_tips_on_surface_and_far_points_outside():
    model, kp = _template_model()
    d = model.sdf(torch.as_tensor(kp)).numpy()
    tips = [4, 8, 12, 16, 20]
    inner = [j for j in range(21) if j not in tips]
    assert np.all(d[inner] < -0.005), d[inner]
    assert np.all(np.abs(d[tips]) < 5e-4), d[tips]
    far = torch.tensor([[0.0, 0.0, 0.3], [0.3, 0.0, 0.0], [0.0, -0.2, 0.0]], dtype=torch.float64)
    assert torch.all(model.sdf(far) > 0.1)


def test_left_hand_is_the_mirror_image_of_the_right():
    shape = sample_shape(np.random.default_rng(3))
    pose = sample_pose(np.random.default_rng(4), "relaxed")
    right, _ = _template_model("right", shape, pose)
    left, _ = _template_model("left", shape, pose)
    pts = torch.as_tensor(np.random.default_rng(5).uniform(-0.1, 0.2, (5000, 3)))
    mirrored = pts * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert float((left.sdf(mirrored) - right.sdf(pts)).abs().max()) < 1e-6


@pytest.fixture(scope="module")
def template_mesh():
    model, kp = _template_model()
    lo, hi = model.bounds_m
    verts, faces = extract_surface(model.sdf, lo - 0.004, hi + 0.004, voxel_m=0.0015)
    return model, kp, verts, faces


def test_marching_cubes_mesh_is_watertight_genus0_and_hand_sized(template_mesh):
    _model, _kp, verts, faces = template_mesh
    mesh = trimesh.Trimesh(verts, faces, process=True)
    assert mesh.is_watertight
    assert mesh.euler_number == 2  # one closed surface without handles
    volume_cm3 = mesh.volume * 1e6
    assert 250 < volume_cm3 < 550, volume_cm3  # adult hands: roughly 300-500 cm^3
    extent = mesh.extents * 1000
    assert 180 < extent[1] < 215, extent  # wrist to middle fingertip ~ 186 mm + the wrist end


def test_sdf_is_a_lower_bound_of_the_distance_and_tight_near_fingers(template_mesh):
    model, _kp, verts, _faces = template_mesh
    rng = np.random.default_rng(7)
    lo, hi = model.bounds_m
    pts = rng.uniform(lo - 0.02, hi + 0.02, size=(20000, 3))
    d = model.sdf(torch.as_tensor(pts)).numpy()
    to_surface = cKDTree(verts).query(pts)[0]  # >= true distance (vertices lie on the surface)
    assert np.all(np.abs(d) <= to_surface + 2e-4), float((np.abs(d) - to_surface).max())
    near = (to_surface > 0.002) & (to_surface < 0.01)
    assert np.median(np.abs(d[near]) / to_surface[near]) > 0.85  # a useful bound, not a tiny one


def _crossing_distance(model: HandModel, start: np.ndarray, direction: np.ndarray) -> float:
    """Distance from an inside point to the surface along a ray (bisection on the sign)."""
    lo, hi = 0.0, 0.06
    for _ in range(40):
        mid = (lo + hi) / 2
        inside = float(model.sdf(torch.as_tensor((start + mid * direction)[None]))[0]) < 0
        lo, hi = (mid, hi) if inside else (lo, mid)
    return lo


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_palm_thickness_and_finger_diameters_within_anatomical_ranges(seed):
    shape = HandShapeParams() if seed == 0 else sample_shape(np.random.default_rng(seed))
    model, kp = _template_model("right", shape)
    frame = HandFrame.from_keypoints(kp, "right")
    # Palm: through the centre of the palm, between the middle and ring metacarpals.
    centre = 0.45 * kp[0] + 0.55 * (0.5 * (kp[9] + kp[13]))
    thickness = _crossing_distance(model, centre, frame.palmar) + _crossing_distance(
        model, centre, -frame.palmar
    )
    assert 0.024 <= thickness <= 0.031, thickness
    assert abs(thickness - shape.palm_thickness_m) < 0.002
    # Index finger: across the proximal phalanx (mid-bone) and near the tip.
    for (j0, j1, t), (lo, hi) in (((5, 6, 0.5), (0.016, 0.0225)), ((7, 8, 0.35), (0.0125, 0.0165))):
        p = kp[j0] + t * (kp[j1] - kp[j0])
        width = _crossing_distance(model, p, frame.palmar) + _crossing_distance(model, p, -frame.palmar)
        assert lo <= width <= hi, (j0, width)


def test_sampled_poses_stay_within_joint_limits():
    rng = np.random.default_rng(11)
    for style in POSE_STYLES:
        for _ in range(20):
            a = sample_pose(rng, style).angles
            assert np.all(a >= JOINT_LIMITS_RAD[..., 0] - 1e-12) and np.all(
                a <= JOINT_LIMITS_RAD[..., 1] + 1e-12
            )


def test_sdf_speed_points_per_second():
    model, _ = _template_model()
    lo, hi = model.bounds_m
    pts = torch.as_tensor(np.random.default_rng(0).uniform(lo - 0.01, hi + 0.01, (200_000, 3)))
    with torch_threads(1):
        model.sdf(pts[:1000])
        start = time.process_time()
        model.sdf(pts)
        cpu = time.process_time() - start
    rate = len(pts) / cpu
    print(f"\nhand SDF: {rate / 1e6:.2f} M points/s per CPU core (points in the hand's bounding box)")
    assert rate > 2e5
