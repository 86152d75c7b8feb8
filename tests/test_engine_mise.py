"""Multiresolution extraction + marching cubes on analytic shapes (no networks)."""

import numpy as np
import pytest
import trimesh

from core.engine.marching import extract_mesh_box
from core.engine.mise import LatticeValues, MultiResolutionGrid, dense_grid_values, run_multiresolution
from core.engine.penetration import HandField, mesh_volume, penetration_region
from core.engine.skeleton_mask import distance_to_segments, far_from_skeleton

SOFTNESS = 0.01  # box units: occupancy = sigmoid(-signed distance / SOFTNESS)


def capsule_occupancy(a, b, radius):
    a, b = np.asarray(a, float), np.asarray(b, float)

    def occ(points):
        d = distance_to_segments(np.asarray(points, np.float64), a[None], b[None]) - radius
        return 1.0 / (1.0 + np.exp(d / SOFTNESS))

    return occ


def extract(occ, resolution0=32, steps=3, **kw):
    grid = MultiResolutionGrid(resolution0, steps, 0.5, 1.1, **kw)
    n = run_multiresolution([grid], lambda qs: [occ(q) for q in qs])
    return grid, n


def test_sphere_volume_and_surface_distance():
    r = 0.3
    grid, n = extract(capsule_occupancy([0, 0, 0], [0, 0, 0], r))
    v, f = extract_mesh_box(grid.to_dense())
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * r**3, rel=2e-3)
    assert np.abs(np.linalg.norm(v, axis=1) - r).max() < 1e-3  # vertices on the analytic sphere
    assert n < 0.1 * 257**3  # only a thin shell around the surface was evaluated


def test_mise_equals_dense_grid_on_a_capsule():
    occ = capsule_occupancy([-0.3, 0.0, 0.05], [0.25, 0.05, 0.0], 0.04)
    grid, n = extract(occ, 32, 2)  # 128^3
    v, f = extract_mesh_box(grid.to_dense())
    vd, fd = extract_mesh_box(dense_grid_values(occ, 128, 1.1, 0.5))
    assert len(v) == len(vd) and len(f) == len(fd)
    np.testing.assert_allclose(np.sort(v, axis=0), np.sort(vd, axis=0), atol=1e-6)
    length = np.linalg.norm([0.55, 0.05, 0.05])
    expected = np.pi * 0.04**2 * length + 4 / 3 * np.pi * 0.04**3
    assert mesh_volume(v, f) == pytest.approx(expected, rel=0.02)  # 4.6 cells per radius at 128^3
    assert n < 129**3 / 10


def test_thin_features_near_the_coarse_resolution_are_found():
    # A capsule thinner than one coarse cell (1.1 / 32 = 0.034): MISE refines from the coarse
    # corners that straddle it; the mesh must still be one closed tube of the right volume.
    occ = capsule_occupancy([-0.4, 0.01, 0.0], [0.4, 0.01, 0.0], 0.02)
    grid, _ = extract(occ)
    v, f = extract_mesh_box(grid.to_dense())
    expected = np.pi * 0.02**2 * 0.8 + 4 / 3 * np.pi * 0.02**3
    assert trimesh.Trimesh(v, f, process=False).is_watertight
    assert mesh_volume(v, f) == pytest.approx(expected, rel=0.02)


def test_skipping_far_points_keeps_the_mesh_and_saves_work():
    a, b = np.array([-0.3, 0.0, 0.0]), np.array([0.3, 0.1, 0.0])
    occ = capsule_occupancy(a, b, 0.05)
    full, n_full = extract(occ)
    skeleton = np.stack([a, b] + [b] * 19)  # a 21-joint "skeleton" collapsed onto the segment
    pruned, n_pruned = extract(occ, skip_outside=far_from_skeleton(skeleton, 0.12))
    v1, _ = extract_mesh_box(full.to_dense())
    v2, _ = extract_mesh_box(pruned.to_dense())
    np.testing.assert_array_equal(np.sort(v1, 0), np.sort(v2, 0))
    assert pruned.skipped_points > 0 and n_pruned < n_full


def test_prior_values_are_reused_not_re_evaluated():
    occ = capsule_occupancy([0, 0, 0], [0.2, 0, 0], 0.1)
    coarse, _ = extract(occ, 32, 1)  # 64^3
    store = LatticeValues(256)
    ijk, values = coarse.known_points()
    store.add(ijk, 64, values)
    fine, n_fine = extract(occ, 32, 3, prior=store.prior_for(256))
    reference, n_ref = extract(occ, 32, 3)
    assert fine.reused_points > 0 and n_fine + fine.reused_points == n_ref
    v1, _ = extract_mesh_box(fine.to_dense())
    v2, _ = extract_mesh_box(reference.to_dense())
    np.testing.assert_allclose(np.sort(v1, 0), np.sort(v2, 0), atol=1e-6)


def test_empty_field_gives_an_empty_mesh():
    grid, n = extract(lambda p: np.zeros(len(p)), 32, 3)
    v, f = extract_mesh_box(grid.to_dense())
    assert len(v) == 0 and len(f) == 0 and n == 33**3


def _sphere_field(centre_m, radius_m, scale=4.0):
    occ = capsule_occupancy([0, 0, 0], [0, 0, 0], radius_m * scale)
    grid, _ = extract(occ)
    return HandField(grid.to_dense(), lambda x: (np.asarray(x) - centre_m) * scale)


def test_penetration_volume_of_two_spheres_matches_the_lens_formula():
    R, r, d = 0.05, 0.04, 0.06  # metres
    a = _sphere_field(np.array([0.0, 0.0, 0.5]), R)
    b = _sphere_field(np.array([d, 0.0, 0.5]), r)
    ba = np.array([[-R, -R, 0.5 - R], [R, R, 0.5 + R]])
    bb = np.array([[d - r, -r, 0.5 - r], [d + r, r, 0.5 + r]])
    region = penetration_region(a, b, ba, bb, spacing_m=1e-3)
    lens_m3 = (
        np.pi
        * (R + r - d) ** 2
        * (d * d + 2 * d * r - 3 * r * r + 2 * d * R + 6 * r * R - 3 * R * R)
        / (12 * d)
    )
    assert region.volume_cm3 == pytest.approx(lens_m3 * 1e6, rel=0.01)
    # The region mesh lies inside both spheres (to a grid cell).
    c = region.vertices_cam_m
    assert np.linalg.norm(c - [0, 0, 0.5], axis=1).max() < R + 2e-3
    assert np.linalg.norm(c - [d, 0, 0.5], axis=1).max() < r + 2e-3
    # Per-point flags.
    assert a.contains(np.array([[d - r + 0.005, 0, 0.5]]))[0]
    assert not a.contains(np.array([[R + 0.005, 0, 0.5]]))[0]


def test_separate_spheres_do_not_penetrate():
    a = _sphere_field(np.array([0.0, 0.0, 0.5]), 0.03)
    b = _sphere_field(np.array([0.1, 0.0, 0.5]), 0.03)
    region = penetration_region(
        a,
        b,
        np.array([[-0.03] * 2 + [0.47], [0.03] * 2 + [0.53]]),
        np.array([[0.07, -0.03, 0.47], [0.13, 0.03, 0.53]]),
    )
    assert region.volume_cm3 == 0.0 and len(region.faces) == 0


def test_marching_cubes_in_slabs_equals_one_call():
    import mcubes

    from core.engine.marching import marching_cubes_in_slabs

    x, y, z = np.mgrid[-1:1:70j, -1:1:60j, -1:1:50j]
    values = 1.0 - np.sqrt((x / 0.8) ** 2 + (y / 0.6) ** 2 + (z / 0.9) ** 2) + 0.05 * np.sin(7 * x)
    v1, f1 = mcubes.marching_cubes(values, 0.0)
    v2, f2 = marching_cubes_in_slabs(values, 0.0, slab_planes=16)
    assert len(v2) == len(v1) and len(f2) == len(f1)  # seam duplicates welded exactly
    rounded1, rounded2 = np.unique(np.round(v1, 9), axis=0), np.unique(np.round(v2, 9), axis=0)
    np.testing.assert_allclose(rounded1, rounded2, atol=1e-9)
    triangles1 = {tuple(sorted(map(tuple, np.round(v1[f], 9)))) for f in f1}
    triangles2 = {tuple(sorted(map(tuple, np.round(v2[f], 9)))) for f in f2}
    assert triangles1 == triangles2


def test_lattice_values_covering_rekeys_to_a_finer_lattice():
    store = LatticeValues(64)
    ijk = np.array([[0, 0, 0], [3, 5, 7], [64, 1, 2], [10, 64, 0]])
    store.add(ijk, 64, np.array([0.1, 0.2, 0.3, 0.4]))
    assert store.covering(32) is store  # 32 divides 64: the store serves it as it is
    fine = store.covering(256)
    assert fine.resolution == 256 and fine is not store
    found, values = fine.lookup(ijk * 4, 256)
    assert found.all() and np.allclose(values, [0.1, 0.2, 0.3, 0.4])
    found, values = fine.lookup(ijk, 64)  # the same points named on the coarse lattice
    assert found.all() and np.allclose(values, [0.1, 0.2, 0.3, 0.4])
    assert not fine.lookup(np.array([[1, 1, 1]]), 256)[0].any()
    fine.add(np.array([[1, 1, 1]]), 256, np.array([0.9]))  # finer points can be added now
    assert fine.lookup(np.array([[1, 1, 1]]), 256)[1][0] == np.float32(0.9)
    with pytest.raises(ValueError):
        store.covering(96)


def test_skeleton_predicate_with_its_lookup_grid_equals_the_exact_distance_test():
    rng = np.random.default_rng(3)
    joints = rng.normal(0, 0.15, (21, 3))  # any skeleton: the bound must hold for every point
    margin = 0.12
    predicate = far_from_skeleton(joints, margin)
    from core.engine.skeleton_mask import SEGMENTS_MANO

    seg = np.asarray(SEGMENTS_MANO)
    points = rng.uniform(-0.6, 0.6, (200_000, 3))
    exact = distance_to_segments(points, joints[seg[:, 0]], joints[seg[:, 1]]) > margin
    fast = predicate(points)
    assert np.array_equal(fast, exact)
    assert 0.1 < exact.mean() < 0.95  # both kinds of points are tested
