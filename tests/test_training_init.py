"""Network I's training shortcuts: the cached encoder maps (a frozen encoder's output per
crop) and the start from an earlier I's decoders (real numbers on two small samples)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from core.errors import InputError, TrainConfigError
from core.synth.samples import SynthConfig, generate_sample, save_sample
from core.training.datasets import ItemSpec, SynthFolderDataset
from core.training.feature_cache import MAPS_KEY, cache_matches
from core.training.recipes import make_recipe
from core.training.recipes.base import hand_inputs_from_joints
from core.training.recipes.config import TrainConfig
from core.training.recipes.init import init_decoders_from_init


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_i")
    cfg = SynthConfig(n_uniform=32, n_surface=32)
    for seed in (21, 22):
        save_sample(generate_sample(seed, cfg), out)
    return out


def _recipe(data_dir: Path, out: Path, **kw):
    torch.manual_seed(0)
    cfg = TrainConfig.of("init", data={"kind": "synth_folder", "path": str(data_dir)}, batch_size=2,
                         points_per_hand=32, torch_threads=1, freeze_encoder=True, **kw)  # fmt: skip
    recipe = make_recipe(cfg, out)
    return recipe, recipe.build()


def test_cached_encoder_maps_give_the_image_loss_and_train_what_follows(data_dir, tmp_path):
    recipe, net = _recipe(data_dir, tmp_path, feature_cache="maps")
    with torch.no_grad():  # a random start reads the image: give the image columns weight
        for side in ("left", "right"):
            dec = getattr(net, f"{side}_decoder")
            w = dec.lin0_2.weight
            w[:, -dec.cfg.add_feature_dim :].normal_(0.0, 0.5)
    base = SynthFolderDataset(data_dir, recipe.item_spec())
    cached = recipe.prepare_dataset(base, net, "cpu")  # builds tmp_path/maps
    assert cache_matches(tmp_path / "maps", net, 2, content=MAPS_KEY)
    batch_c = default_collate([cached[(0, 3)], cached[(1, 3)]])
    fmap = net.cfg.encoder.fmap_dim
    assert "image" not in batch_c and batch_c[MAPS_KEY].shape == (2, 2 * fmap, 64, 64)
    assert batch_c[MAPS_KEY].dtype == torch.float16
    images = SynthFolderDataset(data_dir, ItemSpec(points_per_hand=32, seed=0, crop_with="gt"))
    batch_i = default_collate([images[(0, 3)], images[(1, 3)]])
    assert torch.equal(batch_c["points_left"], batch_i["points_left"])  # same draw of points

    torch.manual_seed(1)  # the same dropout draws on both paths
    loss_c, _ = recipe.loss(net, batch_c, "cpu")
    loss_c.backward()
    grad_c = net.image_final_layer.weight.grad.clone()
    net.zero_grad()
    torch.manual_seed(1)
    loss_i, _ = recipe.loss(net, batch_i, "cpu")
    loss_i.backward()
    grad_i = net.image_final_layer.weight.grad
    assert loss_c.item() == pytest.approx(loss_i.item(), rel=1e-3)
    assert float(grad_i.abs().max()) > 0
    assert float((grad_c - grad_i).abs().max()) <= 2e-2 * float(grad_i.abs().max())  # float16 maps
    assert all(p.grad is None for p in net.image_encoder.parameters())
    assert not net.image_encoder.training  # stored statistics: the cache's


def test_a_cache_needs_a_frozen_encoder(data_dir):
    with pytest.raises(TrainConfigError, match="freeze_encoder"):
        TrainConfig.of("init", data={"kind": "synth_folder", "path": str(data_dir)}, feature_cache="m")


def test_decoders_from_an_earlier_i_with_the_image_columns_zeroed(data_dir, tmp_path):
    _, earlier = _recipe(data_dir, tmp_path)
    _, net = _recipe(data_dir, tmp_path)
    with torch.no_grad():
        for side in ("left", "right"):
            w = getattr(earlier, f"{side}_decoder").lin3_2.weight
            w.normal_(0.0, 0.5)
        n = init_decoders_from_init(net, earlier, zero_image_columns=True)
    assert n == len([k for k in earlier.state_dict() if k.startswith(("left_decoder.", "right_decoder."))])
    dec, old = net.right_decoder, earlier.right_decoder
    d = dec.cfg.add_feature_dim
    assert torch.equal(dec.lin3_2.weight[:, :-d], old.lin3_2.weight[:, :-d])
    assert float(old.lin3_2.weight[:, -d:].abs().max()) > 0
    assert float(dec.lin3_2.weight[:, -d:].abs().max()) == 0.0
    assert torch.equal(dec.lin3_3.weight, old.lin3_3.weight)

    # with the image columns at zero the occupancy no longer depends on the image
    items = SynthFolderDataset(data_dir, ItemSpec(points_per_hand=32, crop_with="gt"))
    item = default_collate([items[(0, 0)]])
    hands = hand_inputs_from_joints(item["joints_left"], item["joints_right"], "cpu")
    points = {s: item[f"points_{s}"] for s in ("left", "right")}
    net.eval()
    with torch.no_grad():
        a = net(torch.randn(1, 3, 256, 256), hands, points)
        b = net(torch.randn(1, 3, 256, 256), hands, points)
        maps = net.encoder_maps(torch.randn(1, 3, 256, 256))
        c = net(None, hands, points, encoder_maps=maps)
    assert torch.equal(a["left"], b["left"]) and torch.equal(a["right"], c["right"])
    assert 0.0 < float(a["left"].mean()) < 1.0


def test_i_on_a_campaign_encoder_goes_on_whole_with_a_random_image_path(data_dir, tmp_path):
    """An earlier I on the ``encoder_from`` encoder carries over whole; ``image_columns_std``
    restarts the image columns at random, and ``image_lr_scale`` speeds up the image path."""
    from core.checkpoints import save_checkpoint
    from core.models.config import EncoderConfig
    from core.models.image_encoder import PretrainedTrunkEncoder
    from core.models.registry import TRAINED_ENCODER_NETWORK
    from core.training.recipes.init import image_columns

    torch.manual_seed(2)
    cfg = EncoderConfig.pretrained_lite()
    campaign = PretrainedTrunkEncoder(cfg).eval()
    enc = save_checkpoint(tmp_path / "enc.safetensors", campaign, TRAINED_ENCODER_NETWORK, config=cfg)
    recipe, first = _recipe(data_dir, tmp_path, encoder_from=str(enc))
    assert any(float(c.abs().max()) > 0 for c in image_columns(first))  # the reference init
    with torch.no_grad():
        first.img_ex_left.attn.fc.bias.add_(0.3)
    earlier = save_checkpoint(tmp_path / "i.safetensors", first, "init_occ", config=recipe.model_config())
    _, again = _recipe(data_dir, tmp_path, encoder_from=str(enc), init_from=str(earlier))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())

    # A fine-tuned copy of that encoder (encoder_tuned_from_init): I keeps every weight, its
    # image path included, and only the encoder is swapped; without the flag the image
    # columns restart at zero.
    tuned = PretrainedTrunkEncoder(cfg).eval()
    tuned.load_state_dict(campaign.state_dict())
    with torch.no_grad():
        next(tuned.parameters()).add_(0.01)
    tuned_path = save_checkpoint(tmp_path / "tuned.safetensors", tuned, TRAINED_ENCODER_NETWORK, config=cfg)
    _, kept = _recipe(data_dir, tmp_path, encoder_from=str(tuned_path), init_from=str(earlier),
                      encoder_tuned_from_init=True)  # fmt: skip
    for name, value in kept.state_dict().items():
        if name.startswith("image_encoder."):
            assert torch.equal(value, tuned.state_dict()[name[len("image_encoder."):]]), name
        else:
            assert torch.equal(value, first.state_dict()[name]), name
    _, restarted = _recipe(data_dir, tmp_path, encoder_from=str(tuned_path), init_from=str(earlier))
    assert all(float(c.abs().max()) == 0 for c in image_columns(restarted))

    recipe, net = _recipe(data_dir, tmp_path, encoder_from=str(enc), init_from=str(earlier),
                          image_columns_std=0.05, image_lr_scale=10.0)  # fmt: skip
    cols = torch.cat([c.reshape(-1) for c in image_columns(net)])
    assert 0.04 < float(cols.std()) < 0.06
    d = net.cfg.decoder.add_feature_dim
    assert torch.equal(net.left_decoder.lin0_2.weight[:, :-d], first.left_decoder.lin0_2.weight[:, :-d])
    opt = recipe.optimizer(net)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([recipe.cfg.lr, 10.0 * recipe.cfg.lr])
    fast = {id(p) for g in opt.param_groups if g["lr"] > recipe.cfg.lr for p in g["params"]}
    assert id(net.image_final_layer.weight) in fast and id(net.left_decoder.lin0_2.weight) not in fast


def test_the_normalised_image_path_gives_unit_tokens_that_follow_the_image(data_dir, tmp_path):
    from core.training.recipes.init import normalise_image_path

    recipe, net = _recipe(data_dir, tmp_path, normalise_image_path=True)
    maps = recipe.first_maps(net, 2)
    with torch.no_grad():
        fmap = net.image_final_layer(maps)
        proj = net.img_ex_left.encoder.proj(fmap)
    for y in (fmap, proj):  # zero mean, unit spread per channel on these crops
        assert float(y.mean(dim=(0, 2, 3)).abs().max()) < 1e-3
        assert float((y.std(dim=(0, 2, 3)) - 1.0).abs().max()) < 1e-3
    before = {k: v.clone() for k, v in net.state_dict().items()}
    normalise_image_path(net, maps)  # a second pass on the same maps changes nothing
    assert all(torch.allclose(v, net.state_dict()[k], atol=1e-4) for k, v in before.items())
    assert torch.equal(before["left_decoder.lin0_0.weight"], net.left_decoder.lin0_0.weight)


def _camera_points(points: torch.Tensor, joints: dict[str, torch.Tensor], side: str, scale: float):
    from core.geometry import camera_ops

    h = hand_inputs_from_joints(joints["left"][None], joints["right"][None], "cpu")[side]
    p = points[None]
    return camera_ops.canonical_to_camera(p, h.root_rot_mat, h.root_xyz, h.cam_R, h.cam_T, side, scale)


def test_noisy_input_keypoints_keep_the_physical_query_points_and_labels(data_dir, tmp_path):
    recipe, net = _recipe(data_dir, tmp_path, input_noise_share=1.0, input_noise_level=1.0)
    base = SynthFolderDataset(data_dir, recipe.item_spec())
    noisy = recipe.prepare_dataset(base, net, "cpu")
    scale = net.cfg.global_scale
    clean, item = base[(1, 2)], noisy[(1, 2)]
    for side in ("left", "right"):
        assert torch.equal(item[f"true_joints_{side}"], clean[f"joints_{side}"])
        assert torch.equal(item[f"occ_{side}"], clean[f"occ_{side}"])
        moved_mm = (item[f"joints_{side}"] - clean[f"joints_{side}"]).norm(dim=-1).mean().item() * 1000
        assert moved_mm > 2.0  # I reads other keypoints ...
        shift = (item[f"points_{side}"] - clean[f"points_{side}"]).norm(dim=-1).median().item()
        assert shift * scale * 1000 > 1.0  # ... so the points' canonical coordinates move
        truth = {s: clean[f"joints_{s}"] for s in ("left", "right")}
        given = {s: item[f"joints_{s}"] for s in ("left", "right")}
        err = (_camera_points(item[f"points_{side}"], given, side, scale)
               - _camera_points(clean[f"points_{side}"], truth, side, scale)).abs().max().item()  # fmt: skip
        assert err < 2e-6  # metres: the same physical points, labels kept
    again = noisy[(1, 2)]
    assert torch.equal(again["joints_right"], item["joints_right"])  # deterministic per (index, draw)
    assert not torch.equal(noisy[(1, 3)]["joints_right"], item["joints_right"])
    loss, stats = recipe.loss(net, default_collate([noisy[(0, 0)], noisy[(1, 0)]]), "cpu")
    assert torch.isfinite(loss) and 0.0 <= stats["iou"] <= 1.0

    _, net_half = _recipe(data_dir, tmp_path, input_noise_share=0.5)
    half = make_recipe(TrainConfig.of("init", data={"kind": "synth_folder", "path": str(data_dir)},
                                      input_noise_share=0.5), tmp_path)  # fmt: skip
    half_items = half.prepare_dataset(SynthFolderDataset(data_dir, half.item_spec()), net_half, "cpu")
    jittered = [not torch.equal(half_items[(0, d)]["joints_left"], half_items[(0, d)]["true_joints_left"])
                for d in range(24)]  # fmt: skip
    assert 6 <= sum(jittered) <= 18
    with pytest.raises(TrainConfigError, match="share"):
        TrainConfig.of("init", data={"kind": "synth_folder", "path": str(data_dir)}, input_noise_share=1.5)


def test_the_pixel_feature_starts_as_the_earlier_i_and_reads_the_pixels_under_each_point(data_dir, tmp_path):
    """``pixel_feature`` (ours): an earlier I without it goes on unchanged (zero projections);
    once the projections are not zero, a point's occupancy follows the map at its own pixel
    and nothing else; the exported config keeps the option, and R built around it too."""
    from core.checkpoints import save_checkpoint
    from core.models.config import EncoderConfig
    from core.models.image_encoder import PretrainedTrunkEncoder
    from core.models.pixel_sampling import sample_pixel_features
    from core.models.registry import TRAINED_ENCODER_NETWORK, load_network
    from core.training.shipping import identity_ref_around

    torch.manual_seed(2)
    cfg = EncoderConfig.pretrained_lite()
    enc = save_checkpoint(tmp_path / "enc.safetensors", PretrainedTrunkEncoder(cfg).eval(),
                          TRAINED_ENCODER_NETWORK, config=cfg)  # fmt: skip
    recipe, earlier = _recipe(data_dir, tmp_path, encoder_from=str(enc))
    saved = save_checkpoint(tmp_path / "i.safetensors", earlier, "init_occ", config=recipe.model_config())
    recipe_p, net = _recipe(data_dir, tmp_path, encoder_from=str(enc), init_from=str(saved),
                            pixel_feature=True)  # fmt: skip
    assert net.cfg.pixel_feature and not earlier.cfg.pixel_feature
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in earlier.state_dict().items())
    items = SynthFolderDataset(data_dir, recipe_p.item_spec())
    batch = default_collate([items[(0, 0)], items[(1, 0)]])
    assert batch["camera_K"].shape == (2, 3, 3)
    net.eval(), earlier.eval()
    with torch.no_grad():
        loss_p, _ = recipe_p.loss(net, batch, "cpu")
        loss_e, _ = recipe.loss(earlier, batch, "cpu")
    assert loss_p.item() == pytest.approx(loss_e.item(), abs=1e-7)  # zero start: the same I

    with torch.no_grad():
        net.right_pixel_proj.weight.normal_(0.0, 0.5)
    hands = hand_inputs_from_joints(batch["joints_left"], batch["joints_right"], "cpu")
    img = torch.randn(2, 3, 256, 256)
    p = batch["points_right"].float()

    def occupancy(feature_map: torch.Tensor) -> torch.Tensor:
        # the tokens stay the true map's: only the pixel-aligned term sees feature_map
        f = dataclasses.replace(features, feature_map=feature_map)
        return net.query(f, "right", hands["right"], p, depth_reference="wrist")[0]

    with torch.no_grad():
        features = net.encode_image(img, cam_K=batch["camera_K"])
        cam = net.camera_points("right", hands["right"], p)
        uv = torch.einsum("ij,nj->ni", batch["camera_K"][0], cam[0])
        uv = uv[:, :2] / uv[:, 2:]
        assert float(sample_pixel_features(features.feature_map, cam, features.cam_K).abs().mean()) > 0
        # the map kept only in a 5 x 5 window (of its 64 px) around point 0's pixel
        u, v = (uv[0] * 63 / 255).round().long().tolist()
        window = torch.zeros_like(features.feature_map)
        window[0, :, v - 2 : v + 3, u - 2 : u + 3] = features.feature_map[0, :, v - 2 : v + 3, u - 2 : u + 3]
        blank, local = occupancy(torch.zeros_like(window)), occupancy(window)
    far = (uv - uv[0]).norm(dim=-1) > 4 * 255 / 63
    assert far.sum() > 10 and torch.equal(local[far], blank[far])  # other pixels: as with no map
    assert abs(float(local[0] - blank[0])) > 1e-4  # point 0 reads its own pixel
    with pytest.raises(InputError, match="cam_K"):
        net.encode_image(img)

    exported = save_checkpoint(tmp_path / "ip.safetensors", net, "init_occ", config=recipe_p.model_config())
    back = load_network(exported)
    assert back.cfg.pixel_feature and torch.equal(back.right_pixel_proj.weight, net.right_pixel_proj.weight)
    ref = load_network(identity_ref_around(exported, tmp_path / "ref.safetensors"))
    assert ref.init_occ.cfg.pixel_feature
