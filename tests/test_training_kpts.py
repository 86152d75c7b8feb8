"""Network K's training shortcuts: fresh keypoint noise per draw, the cached image features,
the training-time dropout (real numbers on two small synthetic samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from core.errors import TrainConfigError
from core.synth.samples import SynthConfig, generate_sample, save_sample
from core.training.datasets import DatasetError, ItemSpec, SynthFolderDataset
from core.training.evaluation import mpjpe_mm
from core.training.feature_cache import (
    CACHED_KEY,
    CachedFeatureDataset,
    FeatureCache,
    build_feature_cache,
    cache_matches,
)
from core.training.recipes import make_recipe
from core.training.recipes.config import TrainConfig


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_k")
    cfg = SynthConfig(n_uniform=8, n_surface=8)
    for seed in (11, 12):
        save_sample(generate_sample(seed, cfg), out)
    return out


def _recipe(data_dir: Path, out: Path, **kw):
    torch.manual_seed(0)
    kw = {"identity_init": True, **kw}
    cfg = TrainConfig.of("kpts", data={"kind": "synth_folder", "path": str(data_dir)}, batch_size=2,
                         torch_threads=1, **kw)  # fmt: skip
    recipe = make_recipe(cfg, out)
    return recipe, recipe.build()


def test_renoise_draws_fresh_noise_per_draw(data_dir):
    stored = SynthFolderDataset(data_dir, ItemSpec(points_per_hand=1, needs_image=False, crop_with="none"))
    fresh = SynthFolderDataset(
        data_dir, ItemSpec(points_per_hand=1, needs_image=False, crop_with="none", renoise=True)
    )
    a, b, c = fresh[(0, 1)], fresh[(0, 1)], fresh[(0, 2)]
    s = stored[(0, 1)]
    assert torch.equal(a["noisy_joints_left"], b["noisy_joints_left"])  # a function of (index, draw)
    assert not torch.allclose(a["noisy_joints_left"], c["noisy_joints_left"])
    assert not torch.allclose(a["noisy_joints_left"], s["noisy_joints_left"])
    assert torch.equal(a["joints_left"], s["joints_left"])  # ground truth untouched
    # detector-like size: a few mm to a few cm per joint after middle-MCP alignment
    items = [fresh[(i, d)] for i in range(2) for d in range(5)]
    errs = [
        mpjpe_mm(it[f"noisy_joints_{h}"].numpy(), it[f"joints_{h}"].numpy())
        for it in items
        for h in ("left", "right")
    ]
    assert 5.0 < float(np.mean(errs)) < 40.0


def test_cached_features_match_the_encoder_and_give_the_same_loss(data_dir, tmp_path):
    # the stored noisy keypoints on both sides (the detector-like noise draws other ones)
    recipe, net = _recipe(data_dir, tmp_path, dropout=0.0, detector_noise={"enabled": False})
    images = SynthFolderDataset(data_dir, ItemSpec(points_per_hand=1, crop_with="noisy"))
    folder = build_feature_cache(net, images, tmp_path / "cache", batch_size=1)
    assert cache_matches(folder, net, 2)
    cache = FeatureCache(folder, net, 2)
    item = images[(1, 0)]
    from core.models.image_encoder import normalize_image

    net.eval()
    with torch.no_grad():
        direct = net.image_features(normalize_image(item["image"][None]))[0]
    assert cache[1].dtype == torch.float16 and cache[1].shape == direct.shape == (64, 64, 64)
    scale = float(direct.abs().max())
    assert float((cache[1].float() - direct).abs().max()) <= 1e-3 * scale  # float16 storage

    cached = CachedFeatureDataset(SynthFolderDataset(data_dir, recipe.item_spec()), cache)
    batch_cached = default_collate([cached[(0, 0)], cached[(1, 0)]])
    assert CACHED_KEY in batch_cached and "image" not in batch_cached
    batch_images = default_collate([images[(0, 0)], images[(1, 0)]])
    loss_c, m_c = recipe.loss(net, batch_cached, "cpu")
    loss_i, m_i = recipe.loss(net, batch_images, "cpu")
    assert loss_c.item() == pytest.approx(loss_i.item(), rel=1e-3)
    # identity initialisation and no dropout: K returns its input
    assert m_i["mpjpe"] == pytest.approx(m_i["mpjpe_in"], abs=1e-3)


def test_a_cache_of_other_weights_is_refused(data_dir, tmp_path):
    _, net = _recipe(data_dir, tmp_path)
    images = SynthFolderDataset(data_dir, ItemSpec(points_per_hand=1, crop_with="noisy"))
    folder = build_feature_cache(net, images, tmp_path / "cache")
    with torch.no_grad():
        net.img_proj_layer.bias.add_(1.0)
    assert not cache_matches(folder, net, 2)
    with pytest.raises(DatasetError, match="other encoder weights"):
        FeatureCache(folder, net, 2)
    with pytest.raises(DatasetError, match="holds 2 samples"):
        FeatureCache(folder, None, 3)


def test_training_dropout_is_a_config_choice(data_dir, tmp_path):
    _, net = _recipe(data_dir, tmp_path, dropout=0.0)
    drops = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(p == 0.0 for p in drops)
    _, default = _recipe(data_dir, tmp_path)
    assert {m.p for m in default.modules() if isinstance(m, torch.nn.Dropout)} == {0.01}


def test_mpjpe_loss_is_the_evaluation_metric(data_dir, tmp_path):

    recipe, net = _recipe(data_dir, tmp_path, dropout=0.0, kpts_loss="mpjpe", root_weight=0.0)
    images = SynthFolderDataset(data_dir, recipe.item_spec())
    batch = default_collate([images[(0, 0)], images[(1, 0)]])
    loss, m = recipe.loss(net, batch, "cpu")
    # identity K: the loss is the input's error, summed over the two hands (mm)
    assert 5.0 < m["mpjpe_in"] < 40.0
    assert loss.item() == pytest.approx(2 * m["mpjpe_in"], rel=1e-5)
    with pytest.raises(TrainConfigError, match="kpts_loss"):
        TrainConfig.of("kpts", data={}, kpts_loss="l1")


def test_the_projection_after_the_frozen_encoder_learns_unless_features_are_cached(data_dir, tmp_path):
    """As in the reference, K trains img_proj_layer on top of the (frozen) encoder; with a
    feature cache the cached map is that layer's output, so it must stay frozen there."""
    batch = default_collate(
        [SynthFolderDataset(data_dir, ItemSpec(points_per_hand=1, crop_with="noisy"))[(i, 0)] for i in (0, 1)]
    )
    recipe, net = _recipe(data_dir, tmp_path, dropout=0.0)
    with torch.no_grad():  # the identity start zeroes the image attention's output: wake it up
        for layer in net.gcn_layers:
            attn = layer.img_ex_left.attn.Attn
            attn.fc.weight.add_(0.01 * torch.randn_like(attn.fc.weight))
    loss, _ = recipe.loss(net, batch, "cpu")
    loss.backward()
    grad = net.img_proj_layer.weight.grad
    assert grad is not None and float(grad.abs().max()) > 0
    assert all(p.grad is None for p in net.image_encoder.parameters())
    names = {n for n, p in net.named_parameters() if any(p is q for q in recipe.trainable(net))}
    assert "img_proj_layer.weight" in names and not any(n.startswith("image_encoder.") for n in names)

    cache_dir = str(tmp_path / "fc")
    cached_recipe, cached_net = _recipe(data_dir, tmp_path / "c", dropout=0.0, feature_cache=cache_dir)
    trainable = {id(p) for p in cached_recipe.trainable(cached_net)}
    assert id(cached_net.img_proj_layer.weight) not in trainable


def test_cached_encoder_maps_give_the_image_loss_and_train_the_projection(data_dir, tmp_path):
    """With ``cache_encoder_maps`` the cache holds the projection's input (float16), the recipe
    applies img_proj_layer with gradients: same loss as from the images, and it learns."""
    from core.training.feature_cache import MAPS_KEY

    recipe, net = _recipe(data_dir, tmp_path, dropout=0.0, feature_cache="fc", cache_encoder_maps=True,
                          detector_noise={"enabled": False})  # the stored noisy keypoints on both sides
    assert id(net.img_proj_layer.weight) in {id(p) for p in recipe.trainable(net)}
    with torch.no_grad():  # the identity start zeroes the image attention's output: wake it up
        for layer in net.gcn_layers:
            attn = layer.img_ex_left.attn.Attn
            attn.fc.weight.add_(0.01 * torch.randn_like(attn.fc.weight))
    base = SynthFolderDataset(data_dir, recipe.item_spec())
    cached = recipe.prepare_dataset(base, net, "cpu")  # builds tmp_path/fc
    assert cache_matches(tmp_path / "fc", net, 2, content=MAPS_KEY)
    assert not cache_matches(tmp_path / "fc", net, 2)  # not a cache of projected features
    batch_cached = default_collate([cached[(0, 0)], cached[(1, 0)]])
    assert batch_cached[MAPS_KEY].dtype == torch.float16
    assert batch_cached[MAPS_KEY].shape == (2, 320, 64, 64) and "image" not in batch_cached
    images = SynthFolderDataset(data_dir, ItemSpec(points_per_hand=1, crop_with="noisy"))
    batch_images = default_collate([images[(0, 0)], images[(1, 0)]])

    loss_c, _ = recipe.loss(net, batch_cached, "cpu")
    loss_c.backward()
    grad_c = net.img_proj_layer.weight.grad.clone()
    net.zero_grad()
    loss_i, _ = recipe.loss(net, batch_images, "cpu")
    loss_i.backward()
    grad_i = net.img_proj_layer.weight.grad
    assert loss_c.item() == pytest.approx(loss_i.item(), rel=1e-3)
    assert float(grad_i.abs().max()) > 0
    assert float((grad_c - grad_i).abs().max()) <= 2e-2 * float(grad_i.abs().max())  # float16 maps
    assert all(p.grad is None for p in net.image_encoder.parameters())

    with pytest.raises(DatasetError, match="holds encoder_maps"):
        FeatureCache(tmp_path / "fc", net, 2, content=CACHED_KEY)


def test_init_from_an_earlier_k_fine_tunes_all_of_its_weights(data_dir, tmp_path):
    from core.checkpoints import save_checkpoint

    recipe, trained = _recipe(data_dir, tmp_path, dropout=0.0)
    with torch.no_grad():
        trained.img_proj_layer.bias.add_(0.5)
    path = save_checkpoint(tmp_path / "k.safetensors", trained, "kpts_ref", config=recipe.model_config())
    _, tuned = _recipe(data_dir, tmp_path, dropout=0.0, init_from=str(path), identity_init=False)
    for name, value in trained.state_dict().items():
        assert torch.equal(tuned.state_dict()[name], value), name
    with pytest.raises(TrainConfigError, match="identity_init"):
        _recipe(data_dir, tmp_path, dropout=0.0, init_from=str(path))


def test_our_k_trains_with_the_undirected_graph_and_fine_tuning_keeps_the_graph(data_dir, tmp_path):
    from core.checkpoints import save_checkpoint
    from core.models.registry import load_network

    recipe, net = _recipe(data_dir, tmp_path, dropout=0.0)
    assert recipe.opts.kpts_graph == "undirected" and net.cfg.undirected_graph
    adjacency = net.gcn_layers[0].graph_left.adjacency
    assert torch.equal(adjacency, adjacency.T)
    # the choice is stored with the weights and comes back on load
    path = save_checkpoint(tmp_path / "k.safetensors", net, "kpts_ref", config=recipe.model_config())
    assert load_network(path).cfg.undirected_graph
    # fine-tuning a K with the other graph would silently change what its weights compute
    with pytest.raises(TrainConfigError, match='"kpts_graph": "undirected"'):
        _recipe(data_dir, tmp_path, dropout=0.0, init_from=str(path), identity_init=False,
                kpts_graph="directed")  # fmt: skip
    _, directed = _recipe(data_dir, tmp_path, dropout=0.0, kpts_graph="directed")
    assert not directed.cfg.undirected_graph
    with pytest.raises(TrainConfigError, match="kpts_graph"):
        TrainConfig.of("kpts", data={}, kpts_graph="both")


def test_k_on_a_campaign_encoder_keeps_an_earlier_ks_keypoint_layers(data_dir, tmp_path):
    """``encoder_from`` (issue 13): K is built around the encoder campaign's export, and an
    earlier K (on another encoder) gives every keypoint-side weight; the projection of the new
    encoder's maps starts afresh and trains from the cached maps."""
    from core.checkpoints import save_checkpoint
    from core.models.config import EncoderConfig
    from core.models.image_encoder import PretrainedTrunkEncoder
    from core.models.registry import TRAINED_ENCODER_NETWORK
    from core.training.feature_cache import MAPS_KEY

    torch.manual_seed(1)
    cfg = EncoderConfig.pretrained_lite()
    campaign = PretrainedTrunkEncoder(cfg).eval()
    enc_path = save_checkpoint(tmp_path / "enc.safetensors", campaign, TRAINED_ENCODER_NETWORK, config=cfg)
    recipe, earlier = _recipe(data_dir, tmp_path, dropout=0.0)
    with torch.no_grad():  # a trained K's image attention is not the identity start's zero
        for layer in earlier.gcn_layers:
            layer.img_ex_left.attn.Attn.fc.weight.normal_(0.0, 0.01)
    k_path = save_checkpoint(tmp_path / "k.safetensors", earlier, "kpts_ref", config=recipe.model_config())
    recipe, net = _recipe(
        data_dir, tmp_path, dropout=0.0, identity_init=False, init_from=str(k_path),
        encoder_from=str(enc_path), feature_cache="fc_lite", cache_encoder_maps=True,
    )  # fmt: skip
    assert net.cfg.encoder == cfg
    state, old = net.state_dict(), earlier.state_dict()
    for name, value in campaign.state_dict().items():
        assert torch.equal(state["image_encoder." + name], value), name
    carried = [k for k in old if not k.startswith(("image_encoder.", "img_proj_layer."))]
    assert carried and all(torch.equal(state[k], old[k]) for k in carried)
    assert net.img_proj_layer.in_channels == cfg.layer1_channels + 2 * cfg.fmap_dim != 320
    cached = recipe.prepare_dataset(SynthFolderDataset(data_dir, recipe.item_spec()), net, "cpu")
    batch = default_collate([cached[(0, 0)], cached[(1, 0)]])
    assert batch[MAPS_KEY].shape[1] == net.img_proj_layer.in_channels
    loss, _ = recipe.loss(net, batch, "cpu")
    loss.backward()
    assert float(net.img_proj_layer.weight.grad.abs().max()) > 0
    assert all(p.grad is None for p in net.image_encoder.parameters())

    # an earlier K on this very encoder goes on with all of its weights, the projection too
    with torch.no_grad():
        net.img_proj_layer.bias.add_(0.25)
    k2_path = save_checkpoint(tmp_path / "k2.safetensors", net, "kpts_ref", config=recipe.model_config())
    _, again = _recipe(
        data_dir, tmp_path, dropout=0.0, identity_init=False, init_from=str(k2_path),
        encoder_from=str(enc_path), feature_cache="fc_lite", cache_encoder_maps=True,
    )  # fmt: skip
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in net.state_dict().items())

    # A fine-tuned copy of that encoder (encoder_tuned_from_init): K keeps every weight, its
    # projection included, and only the encoder is swapped; without the flag the projection
    # would restart.
    tuned = PretrainedTrunkEncoder(cfg).eval()
    tuned.load_state_dict(campaign.state_dict())
    with torch.no_grad():
        next(tuned.parameters()).add_(0.01)
    tuned_path = save_checkpoint(tmp_path / "tuned.safetensors", tuned, TRAINED_ENCODER_NETWORK, config=cfg)
    _, kept = _recipe(
        data_dir, tmp_path, dropout=0.0, identity_init=False, init_from=str(k2_path),
        encoder_from=str(tuned_path), encoder_tuned_from_init=True,
    )  # fmt: skip
    _, restarted = _recipe(
        data_dir, tmp_path, dropout=0.0, identity_init=False, init_from=str(k2_path),
        encoder_from=str(tuned_path),
    )  # fmt: skip
    for name, value in kept.state_dict().items():
        source = tuned.state_dict()[name[len("image_encoder."):]] if name.startswith("image_encoder.") else (
            net.state_dict()[name])  # fmt: skip
        assert torch.equal(value, source), name
    assert not torch.equal(restarted.img_proj_layer.bias, net.img_proj_layer.bias)
    with pytest.raises(TrainConfigError, match="encoder_tuned_from_init"):
        TrainConfig.of("kpts", data={}, encoder_tuned_from_init=True, init_from=str(k2_path))
