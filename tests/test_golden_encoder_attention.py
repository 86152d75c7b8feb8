"""Golden module tests: ResNetSimple (``rs_*``) and I's ``img_ex_left`` (``imgex_*``)."""

from __future__ import annotations

import pytest
import torch

from core.models.attention import ImgEx
from core.models.image_encoder import ResNetSimple
from tests import golden

FILE = "modules.npz"


@pytest.fixture(scope="module")
def encoding():
    g = golden.load(FILE)
    net = ResNetSimple().eval()
    net.load_state_dict(golden.official_state_dict("encoder"), strict=True)
    with torch.no_grad():
        return net(torch.from_numpy(g["rs_in_img"]).float().contiguous())


def test_golden_resnet_simple_heads(encoding):
    golden.assert_matches(encoding.hms, FILE, "rs_hms")
    golden.assert_matches(encoding.mask, FILE, "rs_mask")
    golden.assert_matches(encoding.dp, FILE, "rs_dp")


def test_golden_resnet_simple_feature_maps(encoding):
    golden.assert_matches(encoding.img_fmaps[0], FILE, "rs_img_fmap0_x1")
    golden.assert_matches(encoding.img_fmaps[3], FILE, "rs_img_fmap3_x4")
    golden.assert_matches(encoding.hms_fmaps[0], FILE, "rs_hms_fmap0")
    golden.assert_matches(encoding.hms_fmaps[3], FILE, "rs_hms_fmap3")
    golden.assert_matches(encoding.dp_fmaps[0], FILE, "rs_dp_fmap0")
    golden.assert_matches(encoding.dp_fmaps[3], FILE, "rs_dp_fmap3")
    chmean = lambda t: t.mean(dim=(2, 3))
    golden.assert_matches(chmean(encoding.img_fmaps[1]), FILE, "rs_img_fmap1_x2_chmean")
    golden.assert_matches(chmean(encoding.img_fmaps[2]), FILE, "rs_img_fmap2_x3_chmean")
    for i in (1, 2):
        golden.assert_matches(chmean(encoding.hms_fmaps[i]), FILE, f"rs_hms_fmap{i}_chmean")
        golden.assert_matches(chmean(encoding.dp_fmaps[i]), FILE, f"rs_dp_fmap{i}_chmean")


def test_golden_img_ex_left():
    g = golden.load(FILE)
    prefix = "img_ex_left."
    state = {
        k[len(prefix) :]: v for k, v in golden.official_state_dict("init_occ").items() if k.startswith(prefix)
    }
    module = ImgEx().eval()
    module.load_state_dict(state, strict=True)
    fmap = torch.from_numpy(g["imgex_in_img_feat"]).float()
    queries = torch.from_numpy(g["imgex_in_verts_f"]).float()
    with torch.no_grad():
        tokens = module.encode(fmap)
        out = module.attend(tokens, queries)
        # the one-token shortcut equals the full (1 + 16)-token block at slot 0
        seq = torch.cat(
            [queries.reshape(-1, 1, 19), module.attn.fc(tokens).expand(queries.shape[1], -1, -1)], 1
        )
        full = module.attn.Attn(seq)[:, 0].reshape(queries.shape)
    golden.assert_matches(tokens, FILE, "imgex_grid_tokens")
    golden.assert_matches(out, FILE, "imgex_out")
    golden.assert_matches(full, FILE, "imgex_out")
