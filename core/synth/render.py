"""256 x 256 images of two-hand scenes: camera sampling, shading, backgrounds, occluders.

The camera follows the networks' convention (pinhole ``K``, camera frame x right / y down /
z forward, metres). As the reference's ``cut_img`` does, a full-frame camera (hands 0.5-1.2 m
away, anywhere in a wide field of view) is cropped so that the union bounding box of both
hands' projected surfaces fills 80 % of the 256-pixel crop; ``K`` is that crop's intrinsics.
Hands are Lambert + ambient shaded (wrapped diffuse, a weak specular lobe) with skin tones,
forearms in sleeves or skin, random textured backgrounds, optional occluders, blur, noise and
JPEG artefacts.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.geometry.crop import HAND_BBOX_RATIO, crop_around_points
from core.geometry.raster import rasterize, vertex_normals
from core.types import Camera

IMAGE_SIZE = 256
LABEL_BACKGROUND, LABEL_LEFT, LABEL_RIGHT, LABEL_ARM, LABEL_OCCLUDER = 0, 1, 2, 3, 4

# Skin albedos (linear-ish RGB in [0, 1]) from very light to very dark.
SKIN_TONES = np.array(
    [
        [0.95, 0.80, 0.70],
        [0.90, 0.70, 0.58],
        [0.80, 0.58, 0.45],
        [0.66, 0.45, 0.33],
        [0.50, 0.33, 0.23],
        [0.36, 0.23, 0.16],
        [0.24, 0.15, 0.11],
    ]
)


@dataclass
class MeshLayer:
    """A mesh to draw: camera-frame metres, outward CCW faces, RGB albedo in [0, 1], a label."""

    verts_cam_m: np.ndarray
    faces: np.ndarray
    albedo: np.ndarray
    label: int


@dataclass
class Lighting:
    """A directional key light (unit vector from the surface towards the light, camera frame),
    its intensity, an ambient term, a wrap factor that softens the terminator (skin scatters
    light), and a specular strength."""

    direction_cam: np.ndarray
    intensity: float = 0.8
    ambient: float = 0.35
    wrap: float = 0.3
    specular: float = 0.08

    @staticmethod
    def sample(rng: np.random.Generator) -> Lighting:
        # Mostly from the camera's side (z < 0 points back towards the camera), from above.
        d = rng.normal(size=3) * [0.8, 0.6, 0.5] + [0.0, -0.5, -1.0]
        return Lighting(
            direction_cam=d / np.linalg.norm(d),
            intensity=float(rng.uniform(0.55, 0.95)),
            ambient=float(rng.uniform(0.2, 0.45)),
            wrap=float(rng.uniform(0.15, 0.45)),
            specular=float(rng.uniform(0.0, 0.15)),
        )


def shade_layers(
    layers: list[MeshLayer],
    K: np.ndarray,
    size: int,
    lighting: Lighting,
    albedo_noise: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise and shade ``layers`` -> (rgb float32 (H, W, 3) in [0, 1] with zeros where
    empty, label (H, W) uint8, depth (H, W) metres)."""
    verts = np.concatenate([layer.verts_cam_m for layer in layers]) if layers else np.zeros((0, 3))
    offsets = np.cumsum([0] + [len(layer.verts_cam_m) for layer in layers])
    faces = np.concatenate([layer.faces + off for layer, off in zip(layers, offsets, strict=False)])
    face_layer = np.concatenate([np.full(len(layer.faces), i) for i, layer in enumerate(layers)])
    frags = rasterize(verts, faces, K, size, size)
    mask = frags.mask
    rgb = np.zeros((size, size, 3), dtype=np.float32)
    label = np.zeros((size, size), dtype=np.uint8)
    if not mask.any():
        return rgb, label, frags.depth_m
    normals = vertex_normals(verts, faces)
    f = frags.face[mask]
    b = frags.bary[mask]
    tri = faces[f]
    n = (normals[tri] * b[..., None]).sum(1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    pos = (verts[tri] * b[..., None]).sum(1)
    view = -pos / np.linalg.norm(pos, axis=1, keepdims=True)
    light = lighting.direction_cam
    ndl = n @ light
    diffuse = np.clip((ndl + lighting.wrap) / (1 + lighting.wrap), 0, 1)
    half = light + view
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    spec = np.clip((n * half).sum(1), 0, 1) ** 24 * lighting.specular
    which = face_layer[f]
    albedo = np.stack([layer.albedo for layer in layers])[which]
    if albedo_noise is not None:
        albedo = albedo * albedo_noise[mask][:, None]
    shaded = albedo * (lighting.ambient + lighting.intensity * diffuse)[:, None] + spec[:, None]
    rgb[mask] = np.clip(shaded, 0, 1)
    label[mask] = np.array([layer.label for layer in layers], dtype=np.uint8)[which]
    return rgb, label, frags.depth_m


# ----------------------------------------------------------------------------------------
# Camera
# ----------------------------------------------------------------------------------------
def crop_camera(
    points_cam_m: np.ndarray, focal_px: float, principal_px: tuple[float, float], size: int = IMAGE_SIZE
) -> Camera:
    """The crop camera of a full-frame camera (focal length ``focal_px``, principal point
    ``principal_px``) in which ``points_cam_m`` (e.g. both hands' surface vertices) fill
    :data:`~core.geometry.crop.HAND_BBOX_RATIO` of the ``size`` x ``size`` crop."""
    K_full = np.array([[focal_px, 0, principal_px[0]], [0, focal_px, principal_px[1]], [0, 0, 1.0]])
    uv = Camera(K_full, 1, 1).project(points_cam_m)
    crop = crop_around_points(uv, size=size, bbox_ratio=HAND_BBOX_RATIO)
    return Camera(K=crop.crop_intrinsics(K_full), width=size, height=size)


# ----------------------------------------------------------------------------------------
# Backgrounds, occluders, camera effects
# ----------------------------------------------------------------------------------------
def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def random_background(rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: a gradient, multi-scale noise, and random clutter
    (rectangles, ellipses, lines, stripes) in random colours."""
    grey = rng.uniform(0.2, 0.8)
    c0, c1 = (grey + rng.uniform(0.2, 1.0) * (rng.random((2, 3)) - 0.5)).clip(0, 1)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
    img = (c0 * (1 - t) + c1 * t).astype(np.float32)
    noise = sum(_value_noise(rng, size, c) * w for c, w in ((4, 0.5), (16, 0.3), (64, 0.2)))
    img *= (1 - rng.uniform(0.1, 0.6) * (noise[..., None] - 0.5) * 2).astype(np.float32)
    canvas = np.ascontiguousarray(img)
    for _ in range(rng.integers(0, 7)):
        colour = tuple(float(x) for x in (grey + rng.uniform(0.2, 1.0) * (rng.random(3) - 0.5)).clip(0, 1))
        kind = rng.integers(0, 4)
        p = rng.integers(-size // 4, size + size // 4, size=4)
        if kind == 0:
            cv2.rectangle(canvas, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, -1)
        elif kind == 1:
            axes = (int(rng.integers(5, size // 2)), int(rng.integers(5, size // 2)))
            cv2.ellipse(canvas, (int(p[0]), int(p[1])), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        elif kind == 2:
            cv2.line(canvas, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, int(rng.integers(1, 10)))
        else:
            period = int(rng.integers(6, 40))
            stripes = ((np.arange(size) // period) % 2).astype(bool)
            region = np.zeros((size, size), dtype=bool)
            x0, x1 = sorted(np.clip(p[:2], 0, size))
            region[:, x0:x1] = stripes[None, :].repeat(size, 0)[:, x0:x1]
            canvas[region] = colour
    return np.clip(canvas, 0, 1)


def occluder_layer(
    rng: np.random.Generator, size: int, hand_mask: np.ndarray, max_cover: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """A random flat occluder (polygon or thick bar) overlapping the hands, covering at most
    ``max_cover`` of the hand pixels. Returns (colour image (H, W, 3), mask (H, W) bool)."""
    ys, xs = np.nonzero(hand_mask)
    colour_img = np.zeros((size, size, 3), dtype=np.float32)
    if len(xs) == 0:
        return colour_img, np.zeros((size, size), dtype=bool)
    for _ in range(6):
        mask = np.zeros((size, size), dtype=np.uint8)
        k = rng.integers(len(xs))
        cx, cy = int(xs[k]), int(ys[k])
        if rng.random() < 0.5:
            r = rng.uniform(10, 45)
            n = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.6, 1.0, n)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(mask, [pts], 1)
        else:
            a = rng.uniform(0, np.pi)
            d = np.array([np.cos(a), np.sin(a)]) * size
            cv2.line(
                mask,
                (int(cx - d[0]), int(cy - d[1])),
                (int(cx + d[0]), int(cy + d[1])),
                1,
                int(rng.integers(4, 16)),
            )
        m = mask.astype(bool)
        if (m & hand_mask).sum() <= max_cover * hand_mask.sum():
            colour = rng.random(3)
            shade = 0.75 + 0.25 * _value_noise(rng, size, 8)[..., None]
            colour_img[:] = colour * shade
            return colour_img, m
    return colour_img, np.zeros((size, size), dtype=bool)


def camera_effects(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """float [0, 1] image -> uint8 with mild blur, colour cast, sensor noise and JPEG artefacts."""
    img = rgb.astype(np.float32)
    if rng.random() < 0.7:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.0)))
    img = img * rng.uniform(0.85, 1.15, 3).astype(np.float32) * float(rng.uniform(0.8, 1.2))
    img = img + rng.normal(0, rng.uniform(0.002, 0.02), img.shape).astype(np.float32)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 96))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)
