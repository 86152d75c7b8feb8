"""Display colours shared by the 2D and 3D views (RGB 0-255)."""

HAND_COLORS = {"left": (66, 135, 245), "right": (245, 130, 48)}
PENETRATION_COLOR = (230, 30, 140)
HIDDEN_JOINT_ALPHA = 90  # occluded joints are drawn faint


def rgb01(color: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in color)
