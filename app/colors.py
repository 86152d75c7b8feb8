"""Display colours shared by the 2D and 3D views (RGB 0-255)."""

HAND_COLORS = {"left": (66, 135, 245), "right": (245, 130, 48)}
PENETRATION_COLOR = (230, 30, 140)
HIDDEN_JOINT_ALPHA = 90  # occluded joints are drawn faint
OUTSIDE_JOINT_ALPHA = 25  # joints outside the image: an outline only
# Joints the detector is unsure of (app.annotation.WEAK_JOINT_CONFIDENCE): a red ring in 2D,
# a red sphere in 3D, so the annotator looks there first.
WEAK_JOINT_COLOR = (235, 30, 30)
GHOST_COLOR = (235, 235, 235)  # network K's refined keypoints before they are accepted

# Timeline marks per frame state (app.annotation.FRAME_STATES).
STATE_COLORS = {
    "not annotated": (70, 70, 70),
    "no hands": (140, 140, 140),
    "detected": (66, 160, 245),
    "interpolated": (250, 200, 40),
    "edited": (235, 90, 40),
    "reviewed": (60, 190, 90),
}


def rgb01(color: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in color)
