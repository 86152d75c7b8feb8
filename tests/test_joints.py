import numpy as np
import pytest
import torch

from core.hand import joints as J


@pytest.mark.parametrize("src", J.ORDERS)
@pytest.mark.parametrize("dst", J.ORDERS)
def test_conversion_round_trips(src, dst):
    x = np.random.default_rng(0).normal(size=(2, 21, 3))
    y = J.convert_joints(J.convert_joints(x, src, dst), dst, src)
    np.testing.assert_array_equal(x, y)


def test_published_permutations_agree():
    # The tables are written out as in the references; check they form one consistent system.
    assert list(J.permutation("mano", "halo")) == list(J.MANO_TO_HALO)
    assert list(J.permutation("halo", "mano")) == list(J.HALO_TO_MANO)
    assert list(J.permutation("halo", "biomech")) == list(J.HALO_TO_BIOMECH)
    assert list(J.permutation("biomech", "halo")) == list(J.BIOMECH_TO_HALO)
    assert list(J.permutation("mano", "biomech")) == list(J.MANO_TO_BIOMECH)
    assert list(J.permutation("interhand", "mano")) == list(J.INTERHAND_TO_MANO)


def test_names_follow_each_order():
    assert J.joint_names("mano")[4] == "thumb_tip"
    assert J.joint_names("halo")[4] == "middle_mcp"  # halo joint 4 = middle MCP (K's reference joint)
    assert J.joint_names("halo")[J.HALO_MIDDLE_MCP] == "middle_mcp"
    assert J.joint_names("interhand")[0] == "thumb_tip"
    assert J.joint_names("interhand")[20] == "wrist"
    assert J.joint_names("biomech")[1:6] == ("thumb_cmc", "index_mcp", "middle_mcp", "ring_mcp", "pinky_mcp")
    assert J.joint_names("biomech")[16:] == ("thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip")


def test_halo_edges_are_the_skeleton_in_halo_order():
    assert sorted(J.bones("halo")) == sorted(J.HALO_EDGES)
    assert len(J.HALO_EDGES) == 20


def test_parents_form_trees_rooted_at_the_wrist():
    for order in J.ORDERS:
        par = J.parents(order)
        roots = [j for j, p in enumerate(par) if p < 0]
        assert len(roots) == 1 and J.joint_names(order)[roots[0]] == "wrist"


def test_halo_parts_use_bones_that_end_at_their_matrix_joint():
    names = J.joint_names("halo")
    for part, (a, b) in enumerate(J.HALO_PART_BONES):
        if part == 0:
            assert (names[a], names[b]) == ("wrist", "middle_mcp")
            continue
        assert J.HALO_PART_MATRIX_JOINT[part] == b  # matrix of the bone ending at b
        assert (a, b) in J.HALO_EDGES
        assert names[a].split("_")[0] == J.HALO_PART_NAMES[part].split("_")[0]


def test_works_on_torch_tensors_and_rejects_wrong_shapes():
    t = torch.arange(63.0).reshape(21, 3)
    out = J.convert_joints(t, "mano", "halo")
    assert torch.equal(out[13], t[1])  # halo 13 = thumb CMC = mano 1
    with pytest.raises(ValueError, match="21 joints"):
        J.convert_joints(np.zeros((20, 3)), "mano", "halo")
    with pytest.raises(ValueError, match="unknown joint order"):
        J.permutation("mano", "smpl")


def test_interhand_42_joint_slices_and_real_skeleton_file():
    from tests.golden import realdata_dir

    path = realdata_dir() / "interhand26m_samples" / "skeleton.txt"
    if not path.is_file():
        pytest.skip("realdata not present")
    lines = path.read_text().splitlines()
    rows = [line.split() for line in lines if line.strip() and not line.startswith("#")]
    rows = [r for r in rows if len(r) == 3 and r[1].isdigit()]
    names = {int(r[1]): r[0] for r in rows}
    parent = {int(r[1]): int(r[2]) for r in rows}
    assert names[20] == "r_wrist" and names[41] == "l_wrist"
    # The skeleton file's parents, mapped to the mano order, equal our mano parents.
    ih_to_mano = J.permutation("interhand", "mano")
    mano_to_ih = np.argsort(ih_to_mano)
    for m in range(21):
        ih = int(ih_to_mano[m])
        p = parent[ih]
        expected = -1 if J.MANO_PARENTS[m] < 0 else int(ih_to_mano[J.MANO_PARENTS[m]])
        assert p == expected, (m, ih, p, expected)
        assert int(mano_to_ih[ih]) == m
