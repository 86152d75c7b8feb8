"""The encoder as a second opinion in detection: it adds the missing side beside a found hand
when its maps say so, and nothing else (no hand from nothing, no duplicate, no false hand
from an untrained encoder)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.detect.detector import HandDetection, ImageDetection
from core.detect.lifting import lift_detection_with_fits
from core.detect.second_opinion import (
    SOURCE,
    EncoderSecondOpinion,
    SecondOpinionOptions,
    crops_beside,
    flat_world_shape,
)
from core.geometry.crop import crop_image
from core.hand.joints import HAND_SIDES
from core.models.config import EncoderConfig
from core.models.image_encoder import ImageEncoding, build_image_encoder
from core.synth import render
from core.synth.samples import SynthConfig, generate_sample
from core.training.encoder_targets import MAP_SIZE, joint_heatmaps

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
LABELS = {"left": render.LABEL_LEFT, "right": render.LABEL_RIGHT}


@pytest.fixture(scope="module")
def scene():
    sample = generate_sample(901, SynthConfig(n_uniform=4, n_surface=4))
    truth = {s: sample.camera.project(sample.keypoints.hand(s)) for s in HAND_SIDES}
    return sample, truth


def _found(side: str, joints_px: np.ndarray) -> HandDetection:
    return HandDetection(joints_px, np.zeros(21), flat_world_shape(joints_px), side, 1.0, 0.9)


class FixedDetector:
    def __init__(self, hands, size):
        self.hands, self.size = hands, size

    def detect(self, image_rgb):
        return ImageDetection(list(self.hands), *self.size, views_tried=["full"])


class OracleEncoder(torch.nn.Module):
    """Perfect maps of the scene in the i-th crop of ``transforms`` on its i-th call (the
    crops the second opinion reads, in its order); ``as_side`` maps an output side to the
    scene's side whose joints it shows."""

    def __init__(self, sample, truth, transforms, as_side=None):
        super().__init__()
        self.sample, self.truth, self.transforms = sample, truth, transforms
        self.as_side = as_side or {s: s for s in HAND_SIDES}
        self.calls = 0

    def forward(self, images):
        t = self.transforms[self.calls]
        self.calls += 1
        heat, masks = [], []
        for side in HAND_SIDES:
            shown = self.as_side[side]
            heat.append(joint_heatmaps(t.image_to_crop(self.truth[shown]), t.size, 1.5)[0])
            full = (self.sample.labels == LABELS[shown]).astype(np.float32)
            masks.append(cv2.resize(crop_image(full, t), (MAP_SIZE, MAP_SIZE), interpolation=cv2.INTER_AREA))
        hms = torch.from_numpy(np.concatenate(heat))[None]
        mask = torch.from_numpy(20 * (np.stack(masks) - 0.5))[None]
        return ImageEncoding(hms=hms, mask=mask, dp=torch.zeros(1, 6, MAP_SIZE, MAP_SIZE),
                             img_fmaps=[], hms_fmaps=[], dp_fmaps=[])  # fmt: skip


def test_adds_the_missing_side_where_the_encoder_sees_it(scene):
    sample, truth = scene
    right = _found("right", truth["right"])
    options = SecondOpinionOptions()
    encoder = OracleEncoder(sample, truth, crops_beside(right, options))
    h, w = sample.image.shape[:2]
    detection = EncoderSecondOpinion(FixedDetector([right], (w, h)), encoder, options).detect(sample.image)

    assert encoder.calls == len(options.shifts)
    assert [hand.side for hand in detection.hands] == ["right", "left"]
    assert detection.hands[0] is right  # the detector's hand is kept as it was
    added = detection.hands[1]
    assert added.source == SOURCE and detection.views_tried == ["full", SOURCE]
    # Map cells are 4 crop px; the crop covers ~2 hand sizes, so a cell is ~1-2 image px.
    error = np.linalg.norm(added.landmarks_px - truth["left"], axis=1)
    assert error.mean() < 2.0, error
    assert 0 < added.label_score <= options.score_cap and added.evidence < 0

    lifted = lift_detection_with_fits(detection, sample.camera)
    assert lifted.keypoints.left is not None and np.isfinite(lifted.keypoints.left).all()
    # The added hand has no depth evidence of its own: its joints come out weaker.
    assert lifted.confidence("left").mean() < lifted.confidence("right").mean()


def test_no_encoder_call_when_none_or_both_hands_are_found(scene):
    sample, truth = scene
    h, w = sample.image.shape[:2]
    for hands in ([], [_found("right", truth["right"]), _found("left", truth["left"])]):
        encoder = OracleEncoder(sample, truth, [])
        detection = EncoderSecondOpinion(FixedDetector(hands, (w, h)), encoder).detect(sample.image)
        assert encoder.calls == 0 and detection.hands == hands and detection.views_tried == ["full"]


def test_the_found_hand_read_again_as_the_other_side_is_not_added(scene):
    sample, truth = scene
    right = _found("right", truth["right"])
    options = SecondOpinionOptions()
    as_side = {"left": "right", "right": "right"}
    encoder = OracleEncoder(sample, truth, crops_beside(right, options), as_side=as_side)
    h, w = sample.image.shape[:2]
    detection = EncoderSecondOpinion(FixedDetector([right], (w, h)), encoder, options).detect(sample.image)
    assert encoder.calls == len(options.shifts)
    assert detection.hands == [right] and detection.views_tried == ["full", SOURCE]


def test_an_untrained_encoder_adds_no_hand_to_a_real_photo():
    photo = REALDATA / "images" / "two_hands" / "hamer_test2.jpg"
    if not photo.is_file():
        pytest.skip("../shared/realdata not present")
    image = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    # A hand-sized box in the middle of the photo stands for the one hand the detector found.
    uv = np.array([w / 2, h / 2]) + np.random.default_rng(0).uniform(-0.1, 0.1, (21, 2)) * min(w, h)
    torch.manual_seed(0)
    encoder = build_image_encoder(EncoderConfig.pretrained_lite()).eval()
    detection = EncoderSecondOpinion(FixedDetector([_found("right", uv)], (w, h)), encoder).detect(image)
    assert [hand.side for hand in detection.hands] == ["right"]


def test_flat_world_shape_has_a_hand_length_and_no_depth(scene):
    _, truth = scene
    shape = flat_world_shape(truth["left"])
    assert np.allclose(shape[:, 2], 0) and np.allclose(shape.mean(axis=0), 0)
    assert np.linalg.norm(shape[12] - shape[0]) == pytest.approx(0.19)


def test_detect_command_with_a_second_opinion(tmp_path, capsys):
    """``detect --second-opinion``: a wrong or missing file is a clear error before any
    detection; a (here untrained) campaign encoder runs beside MediaPipe and adds nothing to
    a photo of one hand."""
    from core.checkpoints import save_checkpoint
    from core.models.registry import TRAINED_ENCODER_NETWORK
    from main import main

    image = REALDATA / "images" / "single_hand" / "mediapipe_samples_hand_thumb_up.jpg"
    if not image.is_file():
        pytest.skip("../shared/realdata not present")
    out = tmp_path / "kp.json"
    missing = tmp_path / "no.safetensors"
    assert main(["detect", str(image), "--out", str(out), "--second-opinion", str(missing)]) == 2
    assert "encoder file not found" in capsys.readouterr().err
    wrong = Path(__file__).resolve().parents[1] / "resources" / "weights" / "kpts_ref.safetensors"
    assert main(["detect", str(image), "--out", str(out), "--second-opinion", str(wrong)]) == 2
    assert "not an image encoder" in capsys.readouterr().err and not out.exists()

    torch.manual_seed(0)
    cfg = EncoderConfig.pretrained_lite()
    weights = save_checkpoint(tmp_path / "image_encoder.safetensors", build_image_encoder(cfg),
                              TRAINED_ENCODER_NETWORK, config=cfg)  # fmt: skip
    assert main(["detect", str(image), "--out", str(out), "--second-opinion", str(weights)]) == 0
    printed = capsys.readouterr().out
    assert "(full)" in printed and f"({SOURCE})" not in printed and out.is_file()


def test_the_evaluation_counts_recovered_and_false_hands(tmp_path, monkeypatch):
    """evaluate_second_opinion: both hands found -> each withheld in turn; a read-out at the
    truth is 'recovered', one a hand's size away is a false hand."""
    from core.detect import second_opinion
    from core.detect.encoder_hands import EncoderHand2D
    from core.detect.evaluate_second_opinion import score_second_opinion
    from core.detect.evaluate_synth import load_synth_frames
    from core.synth.samples import save_sample

    sample = generate_sample(901, SynthConfig(n_uniform=4, n_surface=4))
    save_sample(sample, tmp_path)
    frames = load_synth_frames(tmp_path)
    truth = {s: frames[0].camera.project(frames[0].joints_cam_m[s]) for s in HAND_SIDES}
    h, w = sample.image.shape[:2]
    detector = FixedDetector([_found(s, truth[s]) for s in HAND_SIDES], (w, h))

    def reader(shift_px):
        def read(encoder, image, transform, rule=None):
            return {s: EncoderHand2D(s, truth[s] + shift_px, np.full(21, 0.9), 0.1, 1.0, 1.0, True)
                    for s in HAND_SIDES}  # fmt: skip
        return read

    monkeypatch.setattr(second_opinion, "read_hands_in_crop", reader(0.0))
    scores = score_second_opinion(frames, torch.nn.Identity(), detector)
    assert (scores.frames, scores.left_out, scores.left_out_recovered, scores.false_hands) == (1, 2, 2, 0)
    assert scores.missed == 0 and max(scores.added_errors_px) < 1e-9
    monkeypatch.setattr(second_opinion, "read_hands_in_crop", reader(60.0))
    scores = score_second_opinion(frames, torch.nn.Identity(), detector)
    assert (scores.left_out, scores.left_out_recovered, scores.false_hands) == (2, 0, 2)
    assert "0/2" in scores.row("renders")
