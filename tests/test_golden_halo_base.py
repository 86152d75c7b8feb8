"""Golden test of the HALO base network with the official HALO checkpoint (``halo_base.npz``)
and of the weights-only checkpoint loader."""

from __future__ import annotations

import datetime

import pytest
import torch

from core.errors import CheckpointError
from core.models.halo_base import HaloBaseNet, load_halo_base_checkpoint, load_halo_base_net
from tests import golden

FILE = "halo_base.npz"


@pytest.fixture(scope="module")
def net() -> HaloBaseNet:
    golden.require_golden_dir()
    path = golden.halo_checkpoint_path()
    assert path.is_file(), f"HALO checkpoint missing: {path}"
    return load_halo_base_net(path)


def test_golden_halo_base_occupancy(net):
    g = golden.load(FILE)
    with torch.no_grad():
        occ = net(
            torch.from_numpy(g["query_points_canon_norm"]),
            torch.from_numpy(g["unpose_mat"]),
            torch.from_numpy(g["bone_lengths"]),
        )
    golden.assert_matches(occ, FILE, "occupancy")
    assert 0.05 < float((occ > 0.5).float().mean()) < 0.6  # hand-shaped: some inside, most outside


def test_golden_halo_base_part_probs(net):
    g = golden.load(FILE)
    with torch.no_grad():
        probs = net.part_probs(
            torch.from_numpy(g["query_points_canon_norm"][:4]),
            torch.from_numpy(g["unpose_mat"][:4]),
            torch.from_numpy(g["bone_lengths"][:4]),
        )
    golden.assert_matches(probs, FILE, "part_probs_first4")


def test_halo_checkpoint_loads_weights_only(net):
    state = load_halo_base_checkpoint(golden.halo_checkpoint_path())
    assert len(state) == 196 and all(k.startswith("decoder.") for k in state)
    assert tuple(state["decoder.lin0_2.weight"].shape) == (64, 64)
    assert sum(v.numel() for v in state.values()) == 238_024


def test_checkpoint_loader_rejects_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_halo_base_checkpoint(tmp_path / "missing.pt")
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {"decoder.x": torch.zeros(1)}, "when": datetime.date(2024, 1, 1)}, unsafe)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_halo_base_checkpoint(unsafe)
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": {"encoder.w": torch.zeros(1)}}, wrong)
    with pytest.raises(CheckpointError, match="decoder"):
        load_halo_base_checkpoint(wrong)
