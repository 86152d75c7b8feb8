"""The MediaPipe detector on real photos from ../shared/realdata, and the retry views."""

import numpy as np
import pytest
from golden import realdata_dir

from core.detect.views import View, full_views, neighbour_views, tile_views


def _image(rel):
    from core.io.images import load_image_rgb

    path = realdata_dir() / rel
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return load_image_rgb(path)


@pytest.fixture(scope="module")
def detector():
    from core.detect.detector import MediaPipeHandDetector

    with MediaPipeHandDetector() as d:
        yield d


def _inside(points, box):
    x0, y0, x1, y1 = box
    return np.all((points[:, 0] > x0) & (points[:, 0] < x1) & (points[:, 1] > y0) & (points[:, 1] < y1))


def test_single_thumbs_up_hand_lands_on_the_hand(detector):
    image = _image("images/single_hand/mediapipe_samples_hand_thumb_up.jpg")  # 640 x 521
    det = detector.detect(image)
    assert len(det.hands) == 1
    hand = det.hands[0]
    # the hand (looked at): thumb tip near (235, 65), fist x 150-395, wrist/forearm at y <= 450
    assert _inside(hand.landmarks_px, (100, 20, 450, 480))
    assert hand.landmarks_px[4, 1] < 130  # thumb tip is the topmost, up at the thumb nail
    assert np.all(np.isfinite(hand.world_m)) and 0.03 < np.ptp(hand.world_m, axis=0).max() < 0.3


def test_two_thumbs_up_hands_need_the_retries(detector):
    from core.detect.detector import MediaPipeHandDetector

    image = _image("images/two_hands/mediapipe_samples_hand_landmarker_test_image.jpg")  # 640 x 427
    with MediaPipeHandDetector(retries=False) as plain:
        assert len(plain.detect(image).hands) == 1  # measured: MediaPipe alone finds one
    det = detector.detect(image)
    assert sorted(h.side for h in det.hands) == ["left", "right"]
    for hand in det.hands:  # both fists lie in x 60-340, y 55-390
        assert _inside(hand.landmarks_px, (30, 30, 380, 410))
    wrists = np.array([h.landmarks_px[0] for h in det.hands])
    assert np.linalg.norm(wrists[0] - wrists[1]) > 30  # two different hands


def test_detect_image_lifts_to_camera_frame(detector):
    from core.detect import detect_image

    image = _image("images/two_hands/hamer_test5.jpg")  # both hands in front of a face
    res = detect_image(image, None, detector)  # default: the skeleton fit
    assert res.keypoints.present_sides() == ("left", "right")
    for side in ("left", "right"):
        joints = res.keypoints.hand(side)
        assert joints.shape == (21, 3) and np.all(joints[:, 2] > 0.1)
        hand = res.detection.hand(side)
        # the fitted skeleton stays on the landmarks (within a few % of the hand's size)
        error_px = np.linalg.norm(res.camera.project(joints) - hand.landmarks_px, axis=1)
        assert np.median(error_px) < 0.05 * hand.size_px
        confidence = res.joint_confidence[side]
        assert confidence.shape == (21,) and np.all((confidence >= 0) & (confidence <= 1))
        length = res.fits[side].hand_length_m
        assert 0.15 < length < 0.23  # an adult hand, not MediaPipe's too-small world hand
    # the woman's right hand is on the image's left
    assert res.keypoints.right[0, 0] < res.keypoints.left[0, 0]
    world = detect_image(image, None, detector, lifting="world")  # the earlier lifting, snapped to 2D
    assert world.fits == {}
    for side in ("left", "right"):
        landmarks = world.detection.hand(side).landmarks_px
        np.testing.assert_allclose(world.camera.project(world.keypoints.hand(side)), landmarks, atol=1e-6)


def test_bad_image_raises_image_error(detector):
    from core.errors import ImageError

    with pytest.raises(ImageError):
        detector.detect(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageError):
        detector.detect(np.zeros((100, 100, 5), np.uint8))


@pytest.mark.parametrize("view_index", [0, 1, 3, 8, 17])
def test_views_map_pixels_back_exactly(view_index):
    w, h = 1300, 700  # > MAX_VIEW_SIDE: views are downscaled
    dot = np.array([911.0, 233.0])
    image = np.zeros((h, w, 3), np.uint8)
    image[229:237, 907:915] = 255  # 8 x 8 square centred on `dot` (corner convention)
    # full, mirrored, padded-mirrored, zoomed beside the hand, a mirrored tile
    views = full_views(w, h) + neighbour_views(w, h, np.array([[850.0, 200], [950, 300]])) + tile_views(w, h)
    view: View = views[view_index]
    pixels = view.render(image)
    ys, xs = np.nonzero(pixels[..., 0] > 0)
    weights = pixels[ys, xs, 0].astype(float)
    found = np.array([[np.average(xs, weights=weights) + 0.5, np.average(ys, weights=weights) + 0.5]])
    back, _ = view.to_image(found, np.zeros(1))
    np.testing.assert_allclose(back[0], dot, atol=0.75)
