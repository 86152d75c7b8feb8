"""Official checkpoint loading (kinds, renaming rules, clear errors) and our safetensors format.

Networks I and R are stood in for by small modules with the official key layout (their
image encoder shrunk; the HALO part decoders real), so fake official files stay small.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import core.checkpoints as ckpt
from core.checkpoints import (
    detect_official_kind,
    infer_network,
    load_checkpoint,
    load_halo_base,
    load_init_occ,
    load_kpts_ref,
    load_ref_occ,
    load_weights,
    read_checkpoint_info,
    save_checkpoint,
)
from core.errors import CheckpointError
from core.models.config import EncoderConfig, HaloDecoderConfig
from core.models.halo_base import HaloBaseNet, load_torch_checkpoint
from core.models.halo_decoder import HaloPartDecoder
from core.models.image_encoder import ResNetSimple
from core.models.kpts_ref import KeypointRefiner, KptsRefConfig
from tests.golden import halo_checkpoint_path, official_state_dict, require_golden_dir

SMALL_K = KptsRefConfig(encoder=EncoderConfig(backbone="resnet18"))


class TinyEncoder(nn.Module):
    """Stand-in for ResNetSimple with a few keys of the same names (BatchNorm included)."""

    def __init__(self):
        super().__init__()
        self.resnet = nn.ModuleDict({"conv1": nn.Conv2d(3, 4, 3, bias=False), "bn1": nn.BatchNorm2d(4)})
        self.hms_decoder = nn.ModuleDict({"final_layer": nn.Conv2d(4, 2, 1)})


class TinyInitOcc(nn.Module):
    """Network I's key layout: image_encoder, image_final_layer, img_ex_*, {side}_decoder."""

    def __init__(self):
        super().__init__()
        self.image_encoder = TinyEncoder()
        self.image_final_layer = nn.Conv2d(4, 2, 1)
        self.img_ex_left = nn.Linear(3, 3)
        self.img_ex_right = nn.Linear(3, 3)
        self.left_decoder = HaloPartDecoder(HaloDecoderConfig())
        self.right_decoder = HaloPartDecoder(HaloDecoderConfig())


class TinyRefOcc(nn.Module):
    """Network R's key layout: a full I under init_occ, its own encoder, context_enc."""

    def __init__(self):
        super().__init__()
        self.init_occ = TinyInitOcc()
        self.image_encoder = TinyEncoder()
        self.image_final_layer = nn.Conv2d(4, 2, 1)
        self.context_enc = nn.Sequential(nn.Linear(6, 3))


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter and buffer (BatchNorm statistics too) set to distinct random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
            else:
                tensor.copy_(torch.randint(0, 1000, tensor.shape, generator=gen))
    return model


def assert_state_equal(actual: dict, expected: dict, prefix_actual: str = "", prefix_expected: str = ""):
    keys = [k for k in expected if k.startswith(prefix_expected)]
    assert keys, "nothing to compare"
    for key in keys:
        other = prefix_actual + key[len(prefix_expected) :]
        assert torch.equal(actual[other], expected[key]), other


def save_official(path: Path, state: dict, **extras) -> Path:
    torch.save({"model": state, "optimizer": {}, **extras}, path)
    return path


# ---- official kinds -------------------------------------------------------------------------


def test_init_occ_checkpoint_round_trip_with_numpy_scalar(tmp_path):
    source = randomized(TinyInitOcc(), 1)
    path = save_official(
        tmp_path / "init_occ.pt", source.state_dict(), it=5000, epoch_it=3, loss_val_best=np.float32(0.91)
    )
    target = TinyInitOcc()
    report = load_init_occ(target, path)
    assert report.kind == "init_occ" and report.network == "init_occ"
    assert report.num_tensors_loaded == len(source.state_dict())
    assert report.extras == {"it": 5000, "epoch_it": 3, "loss_val_best": pytest.approx(0.91)}
    assert_state_equal(target.state_dict(), source.state_dict())


def test_ref_occ_from_init_occ_fills_frozen_i_and_own_encoder(tmp_path):
    init = randomized(TinyInitOcc(), 2)
    path = save_official(tmp_path / "init_occ.pt", init.state_dict())
    model = randomized(TinyRefOcc(), 3)
    context_before = model.context_enc[0].weight.clone()
    report = load_ref_occ(model, path)
    assert report.kind == "init_occ"
    assert set(report.target_prefixes) == {"init_occ.", "image_encoder.", "image_final_layer."}
    state = model.state_dict()
    assert_state_equal(state, init.state_dict(), prefix_actual="init_occ.")
    assert_state_equal(state, init.state_dict(), "image_encoder.", "image_encoder.")
    assert_state_equal(state, init.state_dict(), "image_final_layer.", "image_final_layer.")
    assert torch.equal(model.context_enc[0].weight, context_before)  # R's own modules untouched


def test_ref_occ_checkpoint_round_trip(tmp_path):
    source = randomized(TinyRefOcc(), 4)
    path = save_official(tmp_path / "ref_occ.pt", source.state_dict())
    target = TinyRefOcc()
    assert load_ref_occ(target, path).kind == "ref_occ"
    assert_state_equal(target.state_dict(), source.state_dict())


def test_halo_baseline_fills_both_decoders_only(tmp_path):
    decoder = randomized(HaloPartDecoder(HaloDecoderConfig()), 5)
    path = save_official(
        tmp_path / "halo_baseline.pt", {"decoder." + k: v for k, v in decoder.state_dict().items()}
    )
    model = randomized(TinyInitOcc(), 6)
    encoder_before = model.image_encoder.resnet["conv1"].weight.clone()
    report = load_init_occ(model, path)
    assert report.kind == "halo_baseline"
    for side in ("left", "right"):
        assert_state_equal(model.state_dict(), decoder.state_dict(), prefix_actual=f"{side}_decoder.")
    assert torch.equal(model.image_encoder.resnet["conv1"].weight, encoder_before)


def test_intaghand_encoder_into_i_and_k(tmp_path):
    encoder = randomized(ResNetSimple(EncoderConfig(backbone="resnet18")), 7)
    raw = {"module.encoder." + k: v for k, v in encoder.state_dict().items()}
    raw["module.decoder.converter.weight"] = torch.ones(3)  # IntagHand's own GCN decoder: ignored
    path = tmp_path / "intaghand_baseline.pth"
    torch.save(raw, path)

    k_model = KeypointRefiner(SMALL_K)
    report = load_kpts_ref(k_model, path)
    assert report.kind == "intaghand_baseline"
    assert report.num_source_keys_ignored == 1
    assert_state_equal(k_model.state_dict(), encoder.state_dict(), prefix_actual="image_encoder.")

    tiny = TinyInitOcc()  # its encoder has a different layout: the error names the keys
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): image_encoder\.dp_decoder"):
        load_init_occ(tiny, path)


def test_real_halo_checkpoint_loads_into_halo_base_net():
    path = halo_checkpoint_path()
    if not path.is_file():
        pytest.skip(f"HALO checkpoint {path} not present")
    net = HaloBaseNet()
    report = load_halo_base(net, path)
    assert report.kind == "halo_base" and report.num_tensors_loaded == 196
    assert report.extras["it"] == 1029000
    assert report.extras["loss_val_best"] == pytest.approx(0.9358, abs=1e-4)
    raw = load_torch_checkpoint(path)["model"]
    assert_state_equal(net.state_dict(), raw)


def test_real_halo_checkpoint_into_network_i_names_the_mis_shaped_keys():
    path = halo_checkpoint_path()
    if not path.is_file():
        pytest.skip(f"HALO checkpoint {path} not present")
    with pytest.raises(CheckpointError) as err:
        load_init_occ(TinyInitOcc(), path)
    message = str(err.value)
    assert "halo_base" in message and "mis-shaped" in message
    assert "left_decoder.lin0_2.weight (checkpoint [64, 64], network [64, 83])" in message


@pytest.mark.parametrize("problem", ["missing", "unexpected", "mis-shaped"])
def test_bad_official_checkpoint_names_the_key(tmp_path, problem):
    state = TinyInitOcc().state_dict()
    if problem == "missing":
        key = "left_decoder.lin3_4.bias"
        del state[key]
    elif problem == "unexpected":
        key = "bogus_layer.weight"
        state[key] = torch.zeros(2)
    else:
        key = "image_final_layer.weight"
        state[key] = torch.zeros(2, 5, 1, 1)
    model = randomized(TinyInitOcc(), 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=rf"1 {problem} key\(s\): {key}"):
        load_init_occ(model, save_official(tmp_path / "init_occ.pt", state))
    assert_state_equal(model.state_dict(), before)  # nothing was half-loaded


def test_unsafe_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "init_occ.pt"
    torch.save({"model": TinyInitOcc().state_dict(), "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_init_occ(TinyInitOcc(), path)
    assert not marker.exists()


def test_kind_detection_by_layout_then_name(tmp_path):
    init = {"model": TinyInitOcc().state_dict()}
    assert detect_official_kind(Path("model_best.pt"), init) == "init_occ"
    assert detect_official_kind(Path("x.pt"), {"model": TinyRefOcc().state_dict()}) == "ref_occ"
    im2hands_decoder = {
        "decoder." + k: v for k, v in HaloPartDecoder(HaloDecoderConfig()).state_dict().items()
    }
    assert detect_official_kind(Path("x.pt"), {"model": im2hands_decoder}) == "halo_baseline"
    assert detect_official_kind(Path("x.pt"), {"model": HaloBaseNet().state_dict()}) == "halo_base"
    assert detect_official_kind(Path("init_occ.pt"), {"model": {}}) == "init_occ"  # name decides
    with pytest.raises(CheckpointError, match="not a checkpoint this application recognises"):
        detect_official_kind(Path("weights.pt"), {"model": {"foo": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="ref_halo_baseline"):
        detect_official_kind(Path("ref_halo_baseline.pt"), {"model": {}})


def test_checkpoint_of_another_network_is_refused(tmp_path):
    path = save_official(tmp_path / "ref_occ.pt", TinyRefOcc().state_dict())
    with pytest.raises(
        CheckpointError, match="'ref_occ' checkpoint, which cannot initialise network 'kpts_ref'"
    ):
        load_kpts_ref(KeypointRefiner(SMALL_K), path)
    with pytest.raises(CheckpointError, match="not found"):
        load_kpts_ref(KeypointRefiner(SMALL_K), tmp_path / "absent.pt")


def test_infer_network():
    assert infer_network(TinyInitOcc()) == "init_occ"
    assert infer_network(TinyRefOcc()) == "ref_occ"
    assert infer_network(KeypointRefiner(SMALL_K)) == "kpts_ref"
    assert infer_network(HaloBaseNet()) == "halo_base"
    with pytest.raises(CheckpointError):
        infer_network(nn.Linear(2, 2))


def test_golden_kpts_ref_weights_through_an_official_k_checkpoint(tmp_path):
    require_golden_dir()
    state = official_state_dict("kpts_ref")
    path = save_official(tmp_path / "model_best.pt", state, it=200)
    model = KeypointRefiner(KptsRefConfig.official())
    report = load_weights(model, path)
    assert report.kind == "kpts_ref" and report.num_tensors_loaded == len(state)
    assert_state_equal(model.state_dict(), state)


# ---- our format ------------------------------------------------------------------------------


def test_our_checkpoint_round_trips_bit_exactly(tmp_path):
    source = randomized(KeypointRefiner(SMALL_K), 9)
    path = tmp_path / "k_small.safetensors"
    save_checkpoint(path, source, config=SMALL_K, metadata={"trained_on": "synthetic", "steps": 12})
    save_checkpoint(
        path, source, config=SMALL_K, metadata={"trained_on": "synthetic", "steps": 12}
    )  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k_small.safetensors"]  # no temp files left

    info = read_checkpoint_info(path)
    assert info.network == "kpts_ref" and info.format_version == ckpt.FORMAT_VERSION
    assert info.metadata == {"trained_on": "synthetic", "steps": 12}
    assert info.config["right_uses_left_regressor"] is False
    assert info.config["grid_f_dims"] == [64, 82, 96, 112]

    target = KeypointRefiner(SMALL_K)
    load_checkpoint(target, path, config=SMALL_K)
    assert_state_equal(target.state_dict(), source.state_dict())
    assert isinstance(load_weights(KeypointRefiner(SMALL_K), path), ckpt.CheckpointInfo)


def test_our_checkpoint_rejects_another_network_or_config(tmp_path):
    path = save_checkpoint(tmp_path / "k.safetensors", KeypointRefiner(SMALL_K), config=SMALL_K)
    with pytest.raises(CheckpointError, match="holds weights of network 'kpts_ref', not 'halo_base'"):
        load_checkpoint(HaloBaseNet(), path)
    other = dataclasses.replace(SMALL_K, right_uses_left_regressor=True)
    with pytest.raises(CheckpointError, match="right_uses_left_regressor: checkpoint False, expected True"):
        load_checkpoint(KeypointRefiner(other), path, config=other)


def test_our_checkpoint_shape_mismatch_names_keys(tmp_path):
    path = save_checkpoint(tmp_path / "halo.safetensors", HaloBaseNet())
    narrow = HaloBaseNet(HaloDecoderConfig(add_feature_dim=0, dims=(32, 32, 32, 32)))
    with pytest.raises(
        CheckpointError, match=r"mis-shaped key\(s\): decoder\.lin0_0\.bias \(checkpoint \[64\]"
    ):
        load_checkpoint(narrow, path)


def test_our_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "halo.safetensors", HaloBaseNet(), metadata={"v": 1})
    original = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, HaloBaseNet(), metadata={"v": 2})
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["halo.safetensors"]


def test_our_format_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not saved by Im2Hands Studio"):
        read_checkpoint_info(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_checkpoint_info(garbage)
    with pytest.raises(CheckpointError, match=r"\.safetensors files"):
        save_checkpoint(tmp_path / "x.pt", HaloBaseNet())


# ---- the real networks I and R with the golden weights ------------------------------------


def test_golden_init_occ_checkpoint_into_real_i_and_r(tmp_path):
    from core.models.init_occ import InitOccNet
    from core.models.ref_occ import RefOccNet

    require_golden_dir()
    state_i = official_state_dict("init_occ")
    path = save_official(tmp_path / "init_occ.pt", state_i, it=1000)
    net_i = InitOccNet()
    assert load_init_occ(net_i, path).num_tensors_loaded == len(state_i)
    assert_state_equal(net_i.state_dict(), state_i)

    net_r = RefOccNet()
    own_before = {k: v.clone() for k, v in net_r.state_dict().items() if k.startswith("trans_enc.")}
    report = load_ref_occ(net_r, path)
    assert report.kind == "init_occ"
    state_r = net_r.state_dict()
    assert_state_equal(state_r, state_i, prefix_actual="init_occ.")
    assert_state_equal(state_r, state_i, "image_encoder.", "image_encoder.")
    assert_state_equal(state_r, state_i, "image_final_layer.", "image_final_layer.")
    assert_state_equal(state_r, own_before)  # R's AIR-Net encoder keeps its own weights


def test_golden_halo_and_intaghand_files_into_real_i(tmp_path):
    from core.models.init_occ import InitOccNet

    require_golden_dir()
    state_i = official_state_dict("init_occ")
    decoder = {
        "decoder." + k[len("left_decoder.") :]: v for k, v in state_i.items() if k.startswith("left_decoder.")
    }
    halo_path = save_official(tmp_path / "halo_baseline.pt", decoder)
    encoder = {"module.encoder." + k: v for k, v in official_state_dict("encoder").items()}
    intag_path = tmp_path / "intaghand_baseline.pth"
    torch.save(encoder, intag_path)

    net = InitOccNet()
    assert load_init_occ(net, halo_path).kind == "halo_baseline"
    assert load_init_occ(net, intag_path).kind == "intaghand_baseline"
    state = net.state_dict()
    assert_state_equal(state, decoder, "right_decoder.", "decoder.")
    assert_state_equal(state, decoder, "left_decoder.", "decoder.")
    assert_state_equal(state, encoder, "image_encoder.", "module.encoder.")

    path = halo_checkpoint_path()
    if path.is_file():  # the public HALO decoder lacks I's 19 image-feature columns
        with pytest.raises(CheckpointError, match=r"32 mis-shaped key\(s\): left_decoder\.lin0_2\.weight"):
            load_init_occ(net, path)
