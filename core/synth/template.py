"""The template right hand and its shape parameters (data only).

Hand frame of the template, metres: origin at the wrist keypoint, **x radial** (towards the
thumb), **y distal** (wrist -> middle MCP), **z palmar** (out of the palm). For a right hand
this frame is right-handed; left hands are its mirror image (x -> -x).

Sizes are those of an adult hand: wrist -> middle MCP 90 mm, index phalanges 40/25/22 mm,
finger diameters tapering from ~20 mm at the base to ~14 mm at the tip, palm 27 mm thick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.hand.joints import FINGERS

# MCP joint centres of index, middle, ring, pinky (hand frame, metres). The slight palmar
# offsets of index/ring/pinky model the transverse metacarpal arch.
MCP_POSITIONS_M = np.array(
    [
        [0.021, 0.086, 0.003],  # index
        [0.000, 0.090, 0.000],  # middle
        [-0.018, 0.085, 0.002],  # ring
        [-0.034, 0.076, 0.005],  # pinky
    ]
)
# Thumb CMC (carpometacarpal) joint: radial, distal of the wrist, towards the palm side.
THUMB_CMC_M = np.array([0.019, 0.027, 0.010])

# Joint-to-joint lengths per finger (thumb..pinky): base bone, middle bone, distal bone
# (distal ends at the fingertip keypoint, which lies on the skin at the tip).
PHALANX_LENGTHS_M = np.array(
    [
        [0.038, 0.031, 0.028],  # thumb: CMC->MCP, MCP->IP, IP->tip
        [0.040, 0.025, 0.022],  # index
        [0.044, 0.028, 0.024],  # middle
        [0.041, 0.027, 0.023],  # ring
        [0.033, 0.020, 0.020],  # pinky
    ]
)

# Rest direction of each long finger: lean towards radial (+x) in the palm plane, degrees.
FINGER_REST_SPLAY_DEG = np.array([5.0, 0.0, -5.0, -11.0])
# Thumb at rest: its metacarpal leans 40 deg radially from y and 25 deg out of the palm plane;
# its pad faces mostly ulnar-palmar (the thumb is pronated relative to the fingers).
THUMB_REST_RADIAL_DEG = 40.0
THUMB_REST_PALMAR_DEG = 25.0
THUMB_PAD_DIRECTION = np.array([-0.75, 0.0, 0.66])

# Skin radii (metres) at the four joints of each finger: base joint, middle joint, distal
# joint, tip (thumb: CMC, MCP, IP, tip).
FINGER_RADII_M = np.array(
    [
        [0.0125, 0.0105, 0.0095, 0.0080],  # thumb
        [0.0100, 0.00875, 0.00775, 0.0070],  # index: 20 mm -> 14 mm diameter
        [0.01025, 0.0090, 0.0080, 0.00725],  # middle
        [0.0095, 0.0085, 0.0075, 0.00675],  # ring
        [0.0085, 0.0075, 0.00675, 0.00625],  # pinky
    ]
)

PALM_THICKNESS_RANGE_M = (0.025, 0.030)
WRIST_HALF_WIDTH_M = 0.016  # half width of the palm slab's core at the wrist (skin adds the radius)

assert len(FINGERS) == PHALANX_LENGTHS_M.shape[0] == FINGER_RADII_M.shape[0]


@dataclass(frozen=True)
class HandShapeParams:
    """Shape variation of one hand beyond pose.

    * ``scale``: overall size (bone lengths and MCP layout), 1 = template;
    * ``finger_length`` (5,): extra per-finger length factors (thumb..pinky);
    * ``palm_width``: factor on the radial spread of the MCP joints and the wrist width;
    * ``finger_thickness``: factor on all finger radii;
    * ``palm_thickness_m``: thickness of the palm slab, metres.
    """

    scale: float = 1.0
    finger_length: np.ndarray = field(default_factory=lambda: np.ones(5))
    palm_width: float = 1.0
    finger_thickness: float = 1.0
    palm_thickness_m: float = 0.027

    def finger_radii_m(self) -> np.ndarray:
        """(5, 4) skin radii at base, middle, distal joint and tip, metres."""
        return FINGER_RADII_M * self.finger_thickness

    def as_vector(self) -> np.ndarray:
        """(9,) float32: scale, 5 finger lengths, palm width, finger thickness, palm thickness (m)."""
        return np.concatenate(
            [
                [self.scale],
                self.finger_length,
                [self.palm_width, self.finger_thickness, self.palm_thickness_m],
            ]
        ).astype(np.float32)

    @staticmethod
    def from_vector(v: np.ndarray) -> HandShapeParams:
        v = np.asarray(v, dtype=np.float64)
        return HandShapeParams(float(v[0]), v[1:6].copy(), float(v[6]), float(v[7]), float(v[8]))
