"""AIR-Net encoder / decoder against the module-level golden vectors (modules.npz airenc_*, airdec_*)."""

import pytest
import torch

from core.models.airnet import AnchorEncoding, PointTransformerEncoder, PointTransformerOccDecoder
from tests import golden


def _sub_state_dict(prefix: str) -> dict:
    sd = golden.official_state_dict("ref_occ")
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def encoder():
    enc = PointTransformerEncoder(fps_skip_near_origin=True)
    enc.load_state_dict(_sub_state_dict("trans_enc."), strict=True)
    return enc.eval()


@pytest.fixture(scope="module")
def decoder():
    dec = PointTransformerOccDecoder()
    dec.load_state_dict(_sub_state_dict("trans_dec."), strict=True)
    return dec.eval()


def test_golden_airnet_encoder(encoder):
    m = golden.load("modules.npz")
    with torch.no_grad():
        out = encoder(torch.from_numpy(m["airenc_in"]))
    golden.assert_matches(out.fps_indices[0], "modules.npz", "airenc_fps_512to256")
    golden.assert_matches(out.fps_indices[1], "modules.npz", "airenc_fps_256to128")
    golden.assert_matches(out.anchors, "modules.npz", "airenc_anchors")
    golden.assert_matches(out.z, "modules.npz", "airenc_z")
    golden.assert_matches(out.anchor_feats, "modules.npz", "airenc_anchor_feats")


def test_golden_airnet_encoder_fps_quirk_matters(encoder):
    # Without the kernel's near-origin skip the sampled centres differ on this input.
    m = golden.load("modules.npz")
    encoder.fps_skip_near_origin = False
    try:
        with torch.no_grad():
            out = encoder(torch.from_numpy(m["airenc_in"]))
    finally:
        encoder.fps_skip_near_origin = True
    assert not torch.equal(out.fps_indices[0], torch.from_numpy(m["airenc_fps_512to256"]).long())


def test_golden_airnet_decoder(decoder):
    m = golden.load("modules.npz")
    encoding = AnchorEncoding(
        z=torch.from_numpy(m["airdec_in_z"]),
        anchors=torch.from_numpy(m["airdec_in_anchors"]),
        anchor_feats=torch.from_numpy(m["airdec_in_anchor_feats"]),
    )
    queries = torch.from_numpy(m["airdec_in_query"])
    with torch.no_grad():
        logits = decoder(queries, encoding)
        decoder.query_chunk = 37  # chunked decoding gives the same answer
        chunked = decoder(queries, encoding)
        decoder.query_chunk = 8192
    golden.assert_matches(logits, "modules.npz", "airdec_out_logit")
    torch.testing.assert_close(chunked, logits, atol=1e-5, rtol=0)


def test_airnet_decoder_rejects_wrong_query_width(decoder):
    encoding = AnchorEncoding(torch.zeros(1, 256), torch.rand(1, 128, 3), torch.zeros(1, 128, 256))
    with pytest.raises(ValueError, match="67"):
        decoder(torch.zeros(1, 10, 3), encoding)
