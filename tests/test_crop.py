import numpy as np
import pytest

from core.geometry.crop import HAND_BBOX_RATIO, CropTransform, crop_around_points, crop_image
from core.types import Camera


def test_crop_box_fills_80_percent_and_round_trips():
    rng = np.random.default_rng(0)
    pts = rng.uniform([100, 50], [300, 120], size=(42, 2))
    tr = crop_around_points(pts)
    in_crop = tr.image_to_crop(pts)
    ext = in_crop.max(axis=0) - in_crop.min(axis=0)
    assert ext.max() == pytest.approx(HAND_BBOX_RATIO * 256, abs=1e-9)
    centre = (in_crop.max(axis=0) + in_crop.min(axis=0)) / 2
    np.testing.assert_allclose(centre, [128, 128], atol=1e-9)
    np.testing.assert_allclose(tr.crop_to_image(in_crop), pts, atol=1e-9)


def test_crop_intrinsics_project_3d_points_into_the_crop():
    cam = Camera.default_for_image(640, 480)
    rng = np.random.default_rng(1)
    pts3d = rng.uniform([-0.1, -0.1, 0.5], [0.1, 0.1, 0.7], size=(42, 3))
    uv = cam.project(pts3d)
    tr = crop_around_points(uv)
    crop_cam = Camera(K=tr.crop_intrinsics(cam.K), width=256, height=256)
    np.testing.assert_allclose(crop_cam.project(pts3d), tr.image_to_crop(uv), atol=1e-9)
    np.testing.assert_allclose(tr.image_intrinsics(crop_cam.K), cam.K, atol=1e-9)


def test_crop_image_puts_pixels_where_the_transform_says():
    img = np.zeros((200, 300, 3), dtype=np.uint8)
    img[90:110, 140:160] = 255  # a 20 px white square centred at (150, 100) (corner convention)
    tr = CropTransform(origin_px=(100.0, 50.0), scale=2.56, size=256)  # 100 px -> 256 px
    crop = crop_image(img, tr)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop[..., 0] > 127)
    centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    np.testing.assert_allclose(centre, tr.image_to_crop(np.array([150.0, 100.0])), atol=0.6)
    assert (xs.max() - xs.min() + 1) == pytest.approx(20 * 2.56, abs=2)
    # outside the image is black
    far = crop_image(img, CropTransform(origin_px=(-500.0, -500.0), scale=1.0, size=64))
    assert far.max() == 0


def test_crop_image_downscaling_keeps_mean_brightness():
    img = np.zeros((1000, 1000), dtype=np.float32)
    img[::2] = 1.0  # fine stripes alias badly without pre-filtering
    tr = CropTransform(origin_px=(0.0, 0.0), scale=0.256, size=256)
    crop = crop_image(img, tr)
    assert abs(float(crop.mean()) - 0.5) < 0.02
