"""Anthropometric prior of the adult human hand for the skeleton fit (data only).

Sources (published population statistics, not fitted to any evaluation frame):

* **Hand length and breadth**: 1988 Anthropometric Survey of US Army Personnel (ANSUR; Gordon et
  al. 1989, NATICK/TR-89/044; the hand subset analysed in Greiner 1991, NATICK/TR-92/011). Hand
  length (wrist crease to the tip of the middle finger): men ~194 mm (SD ~10), women ~181 mm
  (SD ~9); hand breadth at the metacarpal heads: men ~89 mm, women ~78 mm. We use the mean of the
  two sexes (187 mm) and the SD of the 50/50 mixture (~11.5 mm, i.e. 6.2 % in log scale), because
  a photo does not tell us who the hand belongs to. Figures rounded to the millimetre.
* **Segment proportions**: Buchholz, Armstrong & Goldstein 1992, "Anthropometric data for
  describing the kinematics of the human hand", Ergonomics 35(3):261-273: joint-centre to
  joint-centre segment lengths as fractions of hand length (metacarpal, proximal, middle, distal
  phalanx; the distal segment ends at the fingertip). Their fractions had coefficients of
  variation of a few percent; we allow 6 % per phalanx (log SD) and 5 % for the metacarpals.
* **Joint ranges**: normal active ranges of motion as tabulated by the American Academy of
  Orthopaedic Surgeons (Joint Motion: Method of Measuring and Recording, 1965): MCP flexion 90°,
  hyperextension up to ~45° (we allow 30°), PIP flexion 100-110°, DIP flexion 80-90°, thumb MCP
  flexion 50-60°, thumb IP flexion 80° and extension 20°, finger abduction ~20-30°.

Model geometry that the tables do not give directly (documented choices, with a wider prior
spread): the wrist keypoint sits on the long axis of the middle metacarpal, at the point that
makes the straight middle finger's wrist-to-tip distance equal to the hand length; the MCP joint
centres lie across 64 % of the metacarpal breadth (the rest is the radial/ulnar half-widths of
the index and little finger heads plus soft tissue); the thumb's CMC joint sits radially and
palmar of the wrist keypoint.

Hand frame (as :mod:`core.synth.template`): origin at the wrist keypoint, x radial (towards
the thumb), y distal, z palmar; a right hand. Left hands are its mirror image (x -> -x).
"""

from __future__ import annotations

import numpy as np

# --- overall size (ANSUR 1988, both sexes pooled) --------------------------------------------
HAND_LENGTH_MEAN_M = 0.187
HAND_LENGTH_LOG_SD = 0.062
HAND_BREADTH_TO_LENGTH = 0.448  # 83.5 mm / 187 mm (metacarpal breadth, pooled means)
# Left and right hands of one person differ in length by ~1-2 % (bilateral asymmetry).
LEFT_RIGHT_LOG_SD = 0.02

# --- segment lengths / hand length (Buchholz et al. 1992) -------------------------------------
# Rows thumb..pinky; columns: metacarpal, proximal, middle, distal phalanx (thumb: no middle).
SEGMENT_FRACTIONS = np.array(
    [
        [0.251, 0.196, 0.000, 0.158],  # thumb (middle phalanx absent)
        [0.374, 0.245, 0.143, 0.097],  # index
        [0.373, 0.277, 0.170, 0.108],  # middle
        [0.336, 0.259, 0.165, 0.107],  # ring
        [0.295, 0.206, 0.117, 0.093],  # little
    ]
)
PHALANX_LOG_SD = 0.06
METACARPAL_LOG_SD = 0.05
THUMB_BASE_LOG_SD = 0.10  # wrist -> thumb CMC: a model choice, so a wider spread

# --- palm layout (model geometry from the tables above) --------------------------------------
# Carpal offset: the wrist keypoint lies this far (fraction of hand length) proximal of the
# middle finger's CMC joint, so the straight middle finger spans exactly one hand length.
CARPAL_FRACTION = 1.0 - SEGMENT_FRACTIONS[2].sum()
# Radial position of the MCP centres (index, middle, ring, little) as fractions of hand breadth
# (64 % of the breadth between index and little finger centres; the middle finger on the axis).
MCP_RADIAL_FRACTIONS = np.array([0.23, 0.0, -0.215, -0.41])
# Thumb CMC joint relative to the wrist keypoint, fractions of hand length (radial, distal, palmar).
THUMB_CMC_FRACTIONS = np.array([0.11, 0.14, 0.05])
# Rest directions of the long fingers in the palm plane (lean radially, degrees): the fingers
# converge slightly when straight and adducted.
FINGER_REST_SPLAY_DEG = np.array([4.0, 0.0, -4.0, -10.0])
# Thumb metacarpal at rest: 40° radial of the distal axis, 30° out of the palm plane; its pad
# faces ulnar-palmar.
THUMB_REST_RADIAL_DEG = 40.0
THUMB_REST_PALMAR_DEG = 30.0
THUMB_PAD_DIRECTION = np.array([-0.7, 0.0, 0.7])

# --- joint limits (degrees, AAOS ranges; flexion +, towards the palm / the thumb pad) ---------
# Per finger: [base flexion, base abduction (+ radial), middle-joint flexion, distal flexion];
# the thumb's base is the CMC (flexion = towards its pad, abduction = about the pad axis),
# then MCP and IP flexion.
JOINT_LIMITS_DEG = np.array(
    [
        [[-25, 60], [-30, 35], [-15, 60], [-20, 85]],  # thumb
        [[-30, 95], [-20, 30], [-5, 115], [-10, 90]],  # index
        [[-30, 95], [-20, 20], [-5, 115], [-10, 90]],  # middle
        [[-30, 95], [-25, 15], [-5, 115], [-10, 90]],  # ring
        [[-30, 95], [-35, 15], [-5, 115], [-10, 90]],  # little
    ],
    dtype=np.float64,
)
# Palm cupping: flexion of the ring/little metacarpals at their CMC joints (little = full angle,
# ring = half), degrees.
CUP_LIMITS_DEG = (-5.0, 30.0)
