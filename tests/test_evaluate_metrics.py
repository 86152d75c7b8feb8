"""Evaluation metrics, ground truth of the synthetic test split, the shipped-weights format
and the evaluate command (tiny settings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.checkpoints import save_checkpoint
from core.geometry.canonical import canon_norm_to_posed_m, canonicalize_hand
from core.models.registry import ENCODER_FILE, load_network, load_weights_folder
from core.training import evaluation
from core.training.netconfigs import init_occ_config, kpts_ref_config, ref_occ_config
from core.training.shipping import pack_weights

REPO = Path(__file__).resolve().parents[1]


def test_chamfer_iou_mpjpe_numbers():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.05, 0.05, (2000, 3))
    assert evaluation.chamfer_l1_mm(pts, pts) == 0.0
    # a 2 mm shift along x of a dense set: both directions about 2 mm at most
    shifted = pts + np.array([0.002, 0, 0])
    cd = evaluation.chamfer_l1_mm(shifted, pts)
    assert 0.5 < cd <= 2.0 + 1e-9
    assert evaluation.chamfer_l1_mm(np.zeros((0, 3)), pts) == 100.0
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert evaluation.iou(a, b) == pytest.approx(1 / 3)
    joints = rng.normal(0, 0.05, (21, 3))
    assert evaluation.mpjpe_mm(joints + 0.3, joints) == pytest.approx(0.0, abs=1e-9)  # MCP-aligned
    moved = joints.copy()
    moved[4] += [0.0, 0.0, 0.021]
    assert evaluation.mpjpe_mm(moved, joints) == pytest.approx(1.0)


def test_synthetic_ground_truth_reproduces_the_sample_labels():
    """The evaluator's exact occupancy equals the labels stored with the sample."""
    sample = next(evaluation.synthetic_samples(1234, 1))
    from core.synth.samples import SynthConfig, generate_sample

    stored = generate_sample(1234, SynthConfig(keep_meshes=True))
    for side in ("left", "right"):
        occ = stored.occupancy[side]
        halo = canonicalize_hand(stored.keypoints.hand(side), side)
        cam = canon_norm_to_posed_m(
            torch.as_tensor(occ.points_canon_norm, dtype=torch.float64), halo.root_rot_mat, halo.wrist_m, side
        ).numpy()
        agree = (sample.occupancy(side, cam) == occ.occupancy).mean()
        assert agree > 0.999, agree
        assert occ.occupancy.mean() > 0.1  # not trivially empty
        # the mesh surface encloses the inside points: IoU points of the box hit the hand
        pts = evaluation.iou_points(sample.meshes[side], 20000, np.random.default_rng(0))
        assert 0.05 < sample.occupancy(side, pts).mean() < 0.6


def _tiny_networks(tmp_path: Path) -> dict[str, Path]:
    from core.models.halo_base import HaloBaseNet
    from core.models.init_occ import InitOccNet
    from core.models.kpts_ref import KeypointRefiner
    from core.models.ref_occ import RefOccNet

    torch.manual_seed(0)
    init = InitOccNet(init_occ_config("resnet18"))
    ref = RefOccNet(ref_occ_config("resnet18"))
    ref.init_occ.load_state_dict(init.state_dict())
    ref.image_encoder.load_state_dict(init.image_encoder.state_dict())
    kpts = KeypointRefiner(kpts_ref_config("resnet18"))
    kpts.image_encoder.load_state_dict(init.image_encoder.state_dict())
    paths = {
        "ref_occ": save_checkpoint(tmp_path / "r.safetensors", ref, config=ref_occ_config("resnet18")),
        "kpts_ref": save_checkpoint(tmp_path / "k.safetensors", kpts, config=kpts_ref_config("resnet18")),
        "halo_base": save_checkpoint(tmp_path / "h.safetensors", HaloBaseNet()),
    }
    return paths, {"ref_occ": ref, "kpts_ref": kpts}


def test_packed_weights_share_the_encoder_and_fit_the_budget(tmp_path):
    paths, nets = _tiny_networks(tmp_path)
    sizes = pack_weights(paths, tmp_path / "shipped", {"trained_on": "test"})
    total_mb = sum(sizes.values()) / 2**20
    assert set(sizes) == {
        "ref_occ.safetensors",
        "kpts_ref.safetensors",
        "halo_base.safetensors",
        ENCODER_FILE,
    }
    assert total_mb <= 60.0, sizes
    from safetensors import safe_open

    with safe_open(str(tmp_path / "shipped" / "ref_occ.safetensors"), "pt") as f:
        assert not any(k.startswith(("image_encoder.", "init_occ.image_encoder.")) for k in f.keys())
    loaded = load_network(tmp_path / "shipped" / "ref_occ.safetensors")
    for name, value in nets["ref_occ"].state_dict().items():
        got = loaded.state_dict()[name]
        assert got.dtype == value.dtype
        if value.is_floating_point():
            assert torch.allclose(got, value, rtol=1e-3, atol=1e-4), name  # float16 storage
    assert set(load_weights_folder(tmp_path / "shipped")) == {"ref_occ", "kpts_ref", "halo_base"}
    # R and K encoders that differ cannot be packed as one
    k2 = nets["kpts_ref"]
    with torch.no_grad():
        next(k2.image_encoder.parameters()).add_(1.0)
    paths["kpts_ref"] = save_checkpoint(tmp_path / "k2.safetensors", k2, config=kpts_ref_config("resnet18"))
    from core.errors import CheckpointError

    with pytest.raises(CheckpointError, match="differ from encoder.safetensors"):
        pack_weights(paths, tmp_path / "shipped2")
    # K on a pretrained trunk (issue 13) ships its encoder in a file of its own.
    from core.models.config import EncoderConfig
    from core.models.kpts_ref import KeypointRefiner

    lite = kpts_ref_config(EncoderConfig.pretrained_lite())
    paths["kpts_ref"] = save_checkpoint(tmp_path / "k3.safetensors", KeypointRefiner(lite), config=lite)
    sizes = pack_weights(paths, tmp_path / "shipped3")
    assert {ENCODER_FILE, "encoder_efficientnet_lite0.safetensors"} <= set(sizes)
    nets3 = load_weights_folder(tmp_path / "shipped3")
    assert nets3["kpts_ref"].cfg.encoder.backbone == "efficientnet_lite0"
    assert nets3["ref_occ"].cfg.encoder.backbone == "resnet18"


def test_evaluate_command_runs_every_row(tmp_path, capsys):
    """End to end on one sample with untrained tiny networks (numbers meaningless, layout checked)."""
    paths, _ = _tiny_networks(tmp_path)
    pack_weights(paths, tmp_path / "w")
    sys.path.insert(0, str(REPO))
    from main import main

    out_json = tmp_path / "eval.json"
    code = main(["evaluate", "--data", "synthetic:seed=1234,count=1", "--weights", str(tmp_path / "w"),
                 "--json", str(out_json), "--resolution", "32", "--points", "2000"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    for title in ("Table 1", "Table 2", "Table 4", "HALO", "K+I+R"):
        assert title in text
    result = json.loads(out_json.read_text())
    assert set(result["rows"]) == {"HALO", "I", "I+R", "K+I", "K+I+R"}
    for row in result["rows"].values():
        assert 0.0 <= row["iou"] <= 1.0 and row["cd_mm"] > 0 and row["pen_cm3"] >= 0
    assert result["mpjpe_mm"]["noisy"] > 1.0  # the noise model moves joints by millimetres
    assert result["config"]["resolve_contact"] is False and "contact resolution" not in text
    code = main(["evaluate", "--data", "synthetic:seed=1234,count=1", "--weights", str(tmp_path / "w"),
                 "--json", str(out_json), "--resolution", "32", "--points", "2000", "--rows", "I",
                 "--resolve-contact"])  # fmt: skip
    assert code == 0 and "contact resolution" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["config"]["resolve_contact"] is True


def test_evaluate_rejects_bad_data_spec(capsys):
    sys.path.insert(0, str(REPO))
    from main import main

    assert main(["evaluate", "--data", "synthetic:seed=1,count=x"]) == 2
    assert "synthetic:seed=S,count=N" in capsys.readouterr().err


def test_rows_are_scored_on_the_same_ground_truth_points():
    """score_hand draws a sample's IoU points from its seed alone: the same reconstruction scores
    the same in every row (row differences are paired), another seed gives other points."""
    from tests.golden import halo_checkpoint_path

    if not halo_checkpoint_path().is_file():
        pytest.skip("official HALO checkpoint not present")
    from core.engine import Engine, ReconstructionSettings

    sample = next(evaluation.synthetic_samples(1234, 1))
    engine = Engine(halo_checkpoint_path(), device="cpu")
    settings = ReconstructionSettings(
        resolution=32, preview_resolution=32, anchor_resolution=32, device="cpu"
    )
    rec, fields = engine.reconstruct_with_fields(None, sample.camera, sample.keypoints, settings)
    first = evaluation.score_hand("left", sample, rec, fields, 5000, (0, 1))
    again = evaluation.score_hand("left", sample, rec, fields, 5000, (0, 1))
    other = evaluation.score_hand("left", sample, rec, fields, 5000, (0, 2))
    assert first == again
    assert 0.0 < first.iou < 1.0 and first.iou != other.iou


def test_the_packing_command_puts_an_identity_r_around_i(tmp_path):
    """``python -m core.training.shipping --init I``: R is the identity of I's occupancy at
    logit scale 4 (R's 0.45 level on I's 0.5 level), and packing twice gives the same tensors."""
    from safetensors.torch import load_file

    from core.models.init_occ import InitOccNet
    from core.training.netconfigs import init_occ_config
    from core.training.recipes.ref import identity_offset
    from core.training.shipping import main

    torch.manual_seed(0)
    init = InitOccNet(init_occ_config("resnet18"))
    i_path = save_checkpoint(tmp_path / "i.safetensors", init, "init_occ", config=init.cfg)
    for out in ("a", "b"):
        assert main(["--out", str(tmp_path / out), "--init", str(i_path)]) == 0
    a, b = (load_file(str(tmp_path / out / "ref_occ.safetensors")) for out in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref = load_weights_folder(tmp_path / "a")["ref_occ"]
    enc = ref.trans_dec.init_enc
    n = ref.cfg.init_occ_repeat
    assert float(enc.weight[0, -n:].detach().sum()) == pytest.approx(4.0, rel=1e-3)  # float16 storage
    assert float(enc.bias[0].detach()) == pytest.approx(-4.0 * identity_offset(4.0), rel=1e-3)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c")])  # neither --init nor --ref



def test_the_shipped_encoder_comes_back_as_a_campaign_export(tmp_path):
    """``--extract-encoder``: the shared encoder of a packed folder, with its config, as the
    encoder campaign exports it, so that ``encoder_from`` can restart from the shipped set."""
    from safetensors.torch import load_file

    from core.errors import CheckpointError
    from core.models.config import EncoderConfig
    from core.models.init_occ import InitOccNet
    from core.models.registry import load_image_encoder
    from core.training.netconfigs import init_occ_config
    from core.training.shipping import extract_encoder, main

    torch.manual_seed(3)
    init = InitOccNet(init_occ_config(EncoderConfig.pretrained_lite()))
    i_path = save_checkpoint(tmp_path / "i.safetensors", init, "init_occ", config=init.cfg)
    assert main(["--out", str(tmp_path / "w"), "--init", str(i_path)]) == 0
    out = tmp_path / "enc.safetensors"
    assert main(["--out", str(tmp_path / "w"), "--extract-encoder", str(out)]) == 0
    got = load_image_encoder(out).state_dict()
    shipped = load_weights_folder(tmp_path / "w")["ref_occ"].init_occ.image_encoder.state_dict()
    trained = init.image_encoder.state_dict()
    assert got.keys() == shipped.keys() == trained.keys()
    assert all(torch.equal(got[k], shipped[k]) for k in got)  # the shipped (float16) values
    assert all(torch.allclose(got[k].float(), trained[k].float(), rtol=1e-3, atol=1e-3) for k in got)
    with pytest.raises(CheckpointError, match="holds none"):
        extract_encoder(tmp_path / "nothing", out)
    # a packed folder packs again into the same tensors (its encoder read back from beside it)
    assert main(["--out", str(tmp_path / "w2"), "--ref", str(tmp_path / "w" / "ref_occ.safetensors")]) == 0
    for name in ("ref_occ.safetensors", "encoder_efficientnet_lite0.safetensors"):
        a, b = (load_file(str(tmp_path / d / name)) for d in ("w", "w2"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
