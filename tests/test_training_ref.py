"""Network R's cached training (core.training.ref_cache) and its loss terms, on the shipped
weights and a real synthetic sample."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from core.engine.backends import SHIPPED_WEIGHTS_DIR
from core.hand.joints import HAND_SIDES
from core.synth.samples import SynthConfig, generate_sample, save_sample
from core.training import losses
from core.training import ref_cache as rc
from core.training.datasets import DatasetError, SynthFolderDataset
from core.training.recipes.config import TrainConfig
from core.training.recipes.ref import (
    IDENTITY_OFFSET,
    RefRecipe,
    identity_init_ref_decoder,
    identity_ref_occupancy,
    identity_tail_untouched,
    resolved_start_target,
)

SPEC = rc.RefCacheSpec(points_per_hand=64, contact_fraction=0.25, anchor_resolutions=(32,), seed=3)


@pytest.fixture(scope="module")
def shipped_ref():
    from core.models.registry import load_weights_folder

    if not (SHIPPED_WEIGHTS_DIR / "ref_occ.safetensors").is_file():
        pytest.skip("no shipped weights")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_weights_folder(SHIPPED_WEIGHTS_DIR)["ref_occ"]


@pytest.fixture(scope="module")
def sample():
    return generate_sample(11, SynthConfig(n_uniform=256, n_surface=256, keep_meshes=True))


@pytest.fixture(scope="module")
def folder_of_two(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    for seed in (11, 12):
        save_sample(
            generate_sample(seed, SynthConfig(n_uniform=256, n_surface=256, keep_meshes=True)), folder
        )
    return folder


def _random_tail(net) -> None:
    """A tail that is not the identity, so that every input of it matters."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(rc.TAIL_PREFIXES):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def test_cached_tail_equals_r_through_the_engine(shipped_ref, sample):
    """The cache's values run through the tail give R's own output where the engine uses it
    (its anchors from I's surface, I as the engine evaluates it), for a non-identity tail."""
    from core.engine.engine import Engine, _Job
    from core.engine.settings import ReconstructionSettings

    net = shipped_ref
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        _random_tail(net)
        engine = Engine.from_networks(ref=net, device="cpu")
        entry = rc.sample_cache_entry(net, engine, sample, SPEC, index=0)
        assert entry is not None and entry["attended"].shape == (2, 2, 64, 200)
        res = SPEC.anchor_resolutions[0]
        settings = ReconstructionSettings(resolution=res, anchor_resolution=res, device="cpu")
        rng = np.random.default_rng([SPEC.seed, 0])
        with torch.inference_mode():
            job = _Job(Engine.from_networks(ref=net, device="cpu"), sample.image, sample.camera,
                       sample.keypoints, settings, None)  # fmt: skip
            job._ensure_anchors()
            for i, s in enumerate(HAND_SIDES):
                o = sample.occupancy[s]
                pts, occ = rc.contact_subsample(
                    o.points_canon_norm, o.occupancy, o.occupancy_raw, 64, 0.25, rng
                )
                assert np.array_equal(entry["occ_gt"][i], occ.astype(np.uint8))
                init = job.backend.init_occupancy(job.features, job.frames[s], pts, False)
                hand = job.frames[s].network_inputs(torch.device("cpu"))
                direct = net.query(
                    job.features.ref, job.anchor_context, s, hand,
                    torch.as_tensor(pts, dtype=torch.float32)[None], torch.as_tensor(init)[None],
                    return_logits=True,
                )[0, :, 0].numpy()  # fmt: skip
                att, pix, occ_i = (torch.from_numpy(entry[k][i, i].astype(np.float32))
                                   for k in ("attended", "pixel", "occ_init"))  # fmt: skip
                cached = rc.tail_logits(net, att, pix, occ_i).numpy()
                # float16 storage of the inputs
                assert np.abs(cached - direct).max() < 2e-2 * max(1.0, np.abs(direct).max())
                # the other hand's decoder sees the same camera points: the same pixel features
                other = 1 - i
                assert np.abs(entry["pixel"][other, i].astype(np.float32) - entry["pixel"][i, i]).max() < 2e-2
        assert direct.std() > 0.1  # a real check: the random tail does vary
    finally:
        net.load_state_dict(saved)


def test_normalised_tail_keeps_the_identity_output():
    from core.models.ref_occ import RefOccNet
    from core.training.netconfigs import ref_occ_config

    torch.manual_seed(0)
    net = RefOccNet(ref_occ_config("resnet18"))
    with torch.no_grad():
        identity_init_ref_decoder(net)
    att = 3.0 + 5.0 * torch.randn(4, 2, 2, 50, 200)  # large, off-centre inputs
    pix = torch.randn(4, 2, 2, 50, 32)
    occ = torch.rand(4, 2, 2, 50)
    before = rc.tail_logits(net, att, pix, occ).detach()
    rc.normalise_tail_init(net, att, pix, occ)
    after = rc.tail_logits(net, att, pix, occ).detach()
    assert torch.allclose(before, after, atol=1e-4)
    assert torch.allclose(after, 12.0 * (occ - IDENTITY_OFFSET), atol=1e-4)
    x = torch.cat([att.reshape(-1, 200), pix.reshape(-1, 32), occ.reshape(-1, 1).expand(-1, 32)], 1)
    hidden = net.trans_dec.init_enc(x)[:, 1:].detach()
    assert hidden.mean(0).abs().max() < 1e-3 and (hidden.std(0) - 1).abs().max() < 1e-3
    assert identity_tail_untouched(net)


def test_ref_loss_terms():
    out = {
        "left": torch.tensor([[0.8, 0.2]]),
        "right": torch.tensor([[0.6, 0.0]]),
        "right_at_left": torch.tensor([[0.5, 0.0]]),
        "left_at_right": torch.tensor([[1.0, 0.0]]),
    }
    gt = {"left": torch.tensor([[1.0, 0.0]]), "right": torch.tensor([[0.0, 0.0]])}
    loss, parts = losses.ref_occ_loss(out, gt, pen_weight=0.1)
    # MSE: left (0.04 + 0.04) / 2, right 0.36 / 2; pen: 0.8*0.5 + 0.6*1.0
    assert parts["mse"] == pytest.approx(0.04 + 0.18)
    assert parts["pen"] == pytest.approx(1.0)
    assert float(loss) == pytest.approx(0.22 + 0.1)
    # inside errors x3: left (3*0.04 + 0.04) / 4, right unchanged (no inside point)
    _, parts = losses.ref_occ_loss(out, gt, pen_weight=0.0, pos_weight=3.0)
    assert parts["mse"] == pytest.approx(0.04 + 0.18)
    gt2 = {"left": torch.tensor([[1.0, 0.0]]), "right": torch.tensor([[1.0, 0.0]])}
    _, parts = losses.ref_occ_loss(out, gt2, pen_weight=0.0, pos_weight=3.0)
    assert parts["mse"] == pytest.approx(0.04 + (3 * 0.16 + 0) / 4)
    # half of the data term against the start network
    start = {"left": torch.tensor([[0.8, 0.2]]), "right": torch.tensor([[0.0, 0.0]])}
    loss, parts = losses.ref_occ_loss(out, gt, pen_weight=0.0, start=start, start_weight=0.5)
    assert parts["keep"] == pytest.approx(0.18)
    assert float(loss) == pytest.approx(0.5 * 0.22 + 0.5 * 0.18)


def test_identity_ref_occupancy_puts_r_level_on_i_level():
    occ = torch.tensor([0.5, 0.0, 1.0])
    r = identity_ref_occupancy(occ)
    assert float(r[0]) == pytest.approx(0.45, abs=1e-6)
    assert float(r[1]) < 0.01 and float(r[2]) > 0.99


def test_resolved_target_drops_the_less_confident_hand_in_overlaps():
    # (B=1, decoder, point set, M=3): at point 0 both claim it (left more), at 1 only the
    # right hand is above 0.5, at 2 both claim it (right more)
    occ = torch.tensor([[[[0.7, 0.2, 0.6]] * 2, [[0.6, 0.9, 0.8]] * 2]])
    t = resolved_start_target(occ)
    ident = identity_ref_occupancy(occ)
    assert torch.equal(t[0, 0, :, 0], ident[0, 0, :, 0]) and torch.all(t[0, 1, :, 0] == 0)
    # only the right hand claims point 1: it keeps it, the left's (small) value goes to zero
    assert torch.equal(t[0, 1, :, 1], ident[0, 1, :, 1]) and torch.all(t[0, 0, :, 1] == 0)
    assert torch.all(t[0, 0, :, 2] == 0) and torch.equal(t[0, 1, :, 2], ident[0, 1, :, 2])


def test_cache_build_resume_and_recipe_trains_the_tail_only(shipped_ref, folder_of_two, tmp_path):
    from core.training.shipping import pack_weights

    weights = tmp_path / "w"
    pack_weights({"ref_occ": _full_checkpoint(shipped_ref, tmp_path)}, weights)
    cfg = TrainConfig.from_sections(
        {"ref": {"data": {"kind": "synth_folder", "path": str(folder_of_two)}, "batch_size": 2,
                 "points_per_hand": 64, "contact_fraction": 0.25, "seed": 3, "lr": 1e-4,
                 "init_from": str(weights / "ref_occ.safetensors"), "identity_init": True,
                 "ref_cache": "cache", "grad_clip": 1.0, "pen_weight": 1e-3, "identity_weight": 0.5,
                 "encoder_from": str(_encoder_file(shipped_ref, tmp_path))}},
        "ref",
    )  # fmt: skip
    recipe = RefRecipe(cfg, tmp_path / "run")
    net = recipe.build()
    assert identity_tail_untouched(net)
    dataset = SynthFolderDataset(folder_of_two, recipe.item_spec())
    # a first build stopped after one sample resumes; the recipe then reads the full cache
    folder = tmp_path / "run" / "cache"
    spec = recipe.cache_spec()
    _build_one_then_stop(net, dataset, folder, spec)
    assert json.loads((folder / rc.META_FILE).read_text())["filled"] == 1
    assert not rc.cache_matches(folder, net, spec, 2)
    cached = recipe.prepare_dataset(dataset, net, "cpu")
    assert len(cached) == 2 and json.loads((folder / rc.META_FILE).read_text())["filled"] == 2
    assert identity_tail_untouched(net)  # the normalisation leaves fc_out and the blocks alone
    frozen = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith(rc.TAIL_PREFIXES)}
    batch = torch.utils.data.default_collate([cached[0], cached[1]])
    opt = recipe.optimizer(net)
    loss, metrics = recipe.loss(net, batch, "cpu")
    assert set(metrics) >= {"mse", "pen", "keep", "iou", "iou_init", "pen_init"}
    # at the identity start the kept term is zero and R's IoU equals I's
    assert metrics["keep"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["iou"] == pytest.approx(metrics["iou_init"], abs=0.02)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert len(opt.param_groups[0]["params"]) == len(rc.tail_parameters(net))
    after = recipe.loss(net, batch, "cpu")[0]
    assert float(after) < float(loss)
    for k, v in net.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k
    # a cache of other frozen weights is refused
    with torch.no_grad():
        net.context_enc[0].bias.add_(1.0)
    with pytest.raises(DatasetError, match="other frozen weights"):
        rc.RefCache(folder, net)


def _full_checkpoint(net, tmp_path):
    from core.checkpoints import save_checkpoint

    return save_checkpoint(tmp_path / "ref_occ.safetensors", net, "ref_occ", config=net.cfg)


def _encoder_file(net, tmp_path):
    """The R's image encoder as an ``encoder_from`` file (what the recipe builds R around)."""
    from core.checkpoints import save_checkpoint
    from core.models.registry import TRAINED_ENCODER_NETWORK

    return save_checkpoint(
        tmp_path / "encoder.safetensors", net.image_encoder, TRAINED_ENCODER_NETWORK, config=net.cfg.encoder
    )


class _Stop(Exception):
    pass


def _stop_after_one(i):
    if i >= 1:
        raise _Stop


def _build_one_then_stop(net, dataset, folder, spec):
    with pytest.raises(_Stop):
        rc.build_ref_cache(
            net, dataset, folder, spec, flush_every=1, progress=lambda i, n: _stop_after_one(i)
        )


@pytest.mark.parametrize("scale", [4.0, 12.0])
def test_identity_decoder_logit_scale_keeps_r_threshold_on_i_half(scale):
    """The shipped untrained R uses k = 4 (slope 1 at the surface, I's field shape kept);
    training starts at k = 12. Either way R = 0.45 exactly where I = 0.5."""
    from core.models.ref_occ import RefOccNet
    from core.training.netconfigs import ref_occ_config

    torch.manual_seed(0)
    net = RefOccNet(ref_occ_config("resnet18"))
    with torch.no_grad():
        identity_init_ref_decoder(net, logit_scale=scale)
    att = torch.randn(1, 2, 2, 7, 200)
    pix = torch.randn(1, 2, 2, 7, 32)
    occ = torch.tensor([0.0, 0.2, 0.45, 0.5, 0.55, 0.8, 1.0]).expand(1, 2, 2, 7)
    prob = torch.sigmoid(rc.tail_logits(net, att, pix, occ)).detach()
    offset = 0.5 - math.log(0.45 / 0.55) / scale
    assert torch.allclose(prob, torch.sigmoid(scale * (occ - offset)), atol=1e-5)
    assert float(prob[0, 0, 0, 3]) == pytest.approx(0.45, abs=1e-5)


def test_noisy_cache_points_stay_the_same_physical_points(sample):
    """R's cache with ``noisy_share``: the stored query points (with their ground-truth labels)
    move into the canonical frames of the noisy keypoints, as the same camera-frame points."""
    from core.engine.hands import hand_frames
    from core.geometry import camera_ops
    from core.models.config import InitOccConfig

    scale = InitOccConfig().global_scale
    pts = sample.occupancy["right"].points_canon_norm[:64]
    same = rc.into_input_frames(scale, sample.keypoints, hand_frames(sample.keypoints), "right", pts)
    assert np.abs(same - pts).max() < 1e-5
    frames = hand_frames(sample.noisy_keypoints)
    moved = rc.into_input_frames(scale, sample.keypoints, frames, "right", pts)
    shift_mm = np.linalg.norm(moved - pts, axis=-1) * scale * 1000.0
    assert np.median(shift_mm) > 2.0  # the noisy hand sits elsewhere
    hands = {k: hand_frames(kp)["right"].network_inputs("cpu") for k, kp in
             (("gt", sample.keypoints), ("noisy", sample.noisy_keypoints))}  # fmt: skip

    def camera(points, h):
        p = torch.as_tensor(points)[None]
        return camera_ops.canonical_to_camera(p, h.root_rot_mat, h.root_xyz, h.cam_R, h.cam_T, "right", scale)

    err = (camera(moved, hands["noisy"]) - camera(pts, hands["gt"])).abs().max().item()
    assert err < 1e-6  # metres
    spec = rc.RefCacheSpec(noisy_share=0.5)
    assert spec.to_json()["noisy_share"] == 0.5 and "noisy_share" not in rc.RefCacheSpec().to_json()


def test_r_around_a_pixel_feature_i_keeps_it(tmp_path, folder_of_two):
    """R's recipe reads from its start's header whether I has ``pixel_feature`` and builds
    (and exports) R's config with it, I's weights whole."""
    import dataclasses

    from core.checkpoints import save_checkpoint
    from core.models.init_occ import InitOccNet
    from core.training.netconfigs import init_occ_config

    torch.manual_seed(4)
    init = InitOccNet(dataclasses.replace(init_occ_config("resnet18"), pixel_feature=True))
    with torch.no_grad():
        init.left_pixel_proj.weight.normal_(0.0, 0.1)
    path = save_checkpoint(tmp_path / "i.safetensors", init, "init_occ", config=init.cfg)
    for _start in ("an I", "the R written by the first pass (its I inside)"):
        cfg = TrainConfig.from_sections(
            {"ref": {"data": {"kind": "synth_folder", "path": str(folder_of_two)}, "backbone": "resnet18",
                     "init_from": str(path), "identity_init": True}}, "ref")  # fmt: skip
        recipe = RefRecipe(cfg, tmp_path / "run")
        assert recipe.model_config().init_occ.pixel_feature
        net = recipe.build()
        assert torch.equal(net.init_occ.left_pixel_proj.weight, init.left_pixel_proj.weight)
        path = save_checkpoint(tmp_path / "r.safetensors", net, "ref_occ", config=recipe.model_config())
