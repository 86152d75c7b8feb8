"""Hand joint conventions as data: orders, parents, bones and the 16 HALO parts.

Nothing but tables and index arithmetic lives here (no geometry, no torch).
Four 21-joint orders are used across the project:

* ``mano``     -- OpenPose / MediaPipe / IntagHand / Im2Hands ``.ply`` order:
                  0 wrist, 1-4 thumb (CMC..tip), 5-8 index (MCP..tip), 9-12 middle,
                  13-16 ring, 17-20 pinky.  This is the order of our public API.
* ``halo``     -- HALO / MANO internal: wrist, index1-3, middle1-3, pinky1-3,
                  ring1-3, thumb1-3, then tips thumb, index, middle, ring, pinky.
* ``biomech``  -- wrist, the 5 first joints, the 5 second joints, the 5 third
                  joints, the 5 tips (each group thumb..pinky).
* ``interhand``-- InterHand2.6M native, per hand: tip first, wrist last
                  (thumb4, thumb3, thumb2, thumb1, index4, ..., pinky1, wrist).
                  In 42-joint arrays the right hand is 0-20 and the left 21-41.

A permutation table ``A_TO_B`` has the meaning ``joints_b = joints_a[..., A_TO_B, :]``.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 21
NUM_HALO_PARTS = 16
HAND_SIDES = ("left", "right")

ORDERS = ("mano", "halo", "biomech", "interhand")

FINGERS = ("thumb", "index", "middle", "ring", "pinky")

# Joint names in the mano (OpenPose) order.
MANO_JOINT_NAMES = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip

# Parent of each joint in the mano order (-1 for the wrist).
MANO_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)

# --- permutations (joints_b = joints_a[..., A_TO_B, :]) ---------------------------
MANO_TO_HALO = (0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3, 4, 8, 12, 16, 20)
HALO_TO_MANO = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
HALO_TO_BIOMECH = (0, 13, 1, 4, 10, 7, 14, 2, 5, 11, 8, 15, 3, 6, 12, 9, 16, 17, 18, 19, 20)
BIOMECH_TO_HALO = (0, 2, 7, 12, 3, 8, 13, 5, 10, 15, 4, 9, 14, 1, 6, 11, 16, 17, 18, 19, 20)
MANO_TO_BIOMECH = (0, 1, 5, 9, 13, 17, 2, 6, 10, 14, 18, 3, 7, 11, 15, 19, 4, 8, 12, 16, 20)
INTERHAND_TO_MANO = (20, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 19, 18, 17, 16)

# InterHand2.6M 42-joint arrays: which slice holds which hand.
INTERHAND_HAND_SLICES = {"right": slice(0, 21), "left": slice(21, 42)}

# --- the 16 HALO parts ----------------------------------------------------------------
HALO_PART_NAMES = (
    "palm",
    "index_proximal", "index_middle", "index_distal",
    "middle_proximal", "middle_middle", "middle_distal",
    "pinky_proximal", "pinky_middle", "pinky_distal",
    "ring_proximal", "ring_middle", "ring_distal",
    "thumb_1", "thumb_2", "thumb_3",
)  # fmt: skip

# Which of the 21 per-joint PoseConverter matrices (halo order) each part uses.
# Part 0 (palm) takes entry 0, the identity: the globally canonicalised frame.
HALO_PART_MATRIX_JOINT = (0, 2, 3, 17, 5, 6, 18, 8, 9, 20, 11, 12, 19, 14, 15, 16)

# Bone of each part as a pair of halo-order joints; its length is the part's bone length.
HALO_PART_BONES = (
    (0, 4),
    (1, 2), (2, 3), (3, 17),
    (4, 5), (5, 6), (6, 18),
    (7, 8), (8, 9), (9, 20),
    (10, 11), (11, 12), (12, 19),
    (13, 14), (14, 15), (15, 16),
)  # fmt: skip

# Directed parent->child edges in the halo order (network K's graph; no self loops).
HALO_EDGES = (
    (0, 13), (13, 14), (14, 15), (15, 16),  # thumb
    (0, 1), (1, 2), (2, 3), (3, 17),  # index
    (0, 4), (4, 5), (5, 6), (6, 18),  # middle
    (0, 10), (10, 11), (11, 12), (12, 19),  # ring
    (0, 7), (7, 8), (8, 9), (9, 20),  # pinky
)  # fmt: skip

# Frequently used single joints.
MANO_WRIST = 0
MANO_MIDDLE_MCP = 9
HALO_MIDDLE_MCP = 4

# Parent of each biomech joint used by HALO's bone decomposition (bone k ends at joint k+1).
BIOMECH_BONE_PARENT = (0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)


def _invert(perm: tuple[int, ...]) -> tuple[int, ...]:
    inverse = [0] * len(perm)
    for new_index, old_index in enumerate(perm):
        inverse[old_index] = new_index
    return tuple(inverse)


MANO_TO_INTERHAND = _invert(INTERHAND_TO_MANO)
BIOMECH_TO_MANO = _invert(MANO_TO_BIOMECH)

_FROM_MANO = {
    "mano": tuple(range(NUM_JOINTS)),
    "halo": MANO_TO_HALO,
    "biomech": MANO_TO_BIOMECH,
    "interhand": MANO_TO_INTERHAND,
}


def permutation(src: str, dst: str) -> np.ndarray:
    """Index array ``idx`` such that ``joints_dst = joints_src[..., idx, :]``."""
    if src not in _FROM_MANO or dst not in _FROM_MANO:
        raise ValueError(f"unknown joint order {src!r} or {dst!r}; known: {ORDERS}")
    mano_to_src = np.asarray(_FROM_MANO[src])
    mano_to_dst = np.asarray(_FROM_MANO[dst])
    src_to_mano = np.argsort(mano_to_src)
    # dst[k] = mano[mano_to_dst[k]] = src[src_to_mano[mano_to_dst[k]]]
    return src_to_mano[mano_to_dst]


def convert_joints(joints, src: str, dst: str):
    """Reorder the joint axis (-2) of a numpy array or torch tensor from ``src`` to ``dst``."""
    if joints.shape[-2] != NUM_JOINTS:
        raise ValueError(f"expected {NUM_JOINTS} joints on axis -2, got shape {tuple(joints.shape)}")
    idx = permutation(src, dst)
    return joints[..., idx.tolist(), :]


def parents(order: str) -> tuple[int, ...]:
    """Parent index of every joint in ``order`` (-1 for the wrist)."""
    order_index_of_mano = permutation(order, "mano")  # mano[k] = order[order_index_of_mano[k]]
    mano_index_of_order = np.argsort(order_index_of_mano)
    result = []
    for j in range(NUM_JOINTS):
        mano_parent = MANO_PARENTS[int(mano_index_of_order[j])]
        result.append(-1 if mano_parent < 0 else int(order_index_of_mano[mano_parent]))
    return tuple(result)


def bones(order: str) -> tuple[tuple[int, int], ...]:
    """The 20 (parent, child) bones of the hand skeleton in ``order``."""
    par = parents(order)
    return tuple((p, c) for c, p in enumerate(par) if p >= 0)


def joint_names(order: str) -> tuple[str, ...]:
    idx = permutation("mano", order)
    return tuple(MANO_JOINT_NAMES[i] for i in idx)
