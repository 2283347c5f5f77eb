"""The DeepLab head's parts against hand-written references (the d2_zoo parity fixtures cover
the head as Detectron2 runs it; its NONLOCAL_ON block has no fixture, so it is checked here
against the embedded-Gaussian formula written out with einsum), and its Detectron2 keys."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amanet.config import load_config
from amanet.modeling.heads.deeplab import ASPP, DeepLabHead, GroupNorm, NonLocalBlock2D
from amanet.modeling.model import build_model


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


def test_nonlocal_block_equals_the_formula():
    block = _randomize(NonLocalBlock2D(64)).eval()
    x = torch.randn(3, 64, 10, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = block(x)
        w = {k: v for k, v in block.state_dict().items()}
        conv = lambda t, k: torch.einsum("oc,nchw->nohw", w[k + ".weight"][:, :, 0, 0], t) \
            + w[k + ".bias"][None, :, None, None]
        g = F.max_pool2d(conv(x, "g.0"), 2).flatten(2)          # [N, 32, 30]
        theta = conv(x, "theta").flatten(2)                      # [N, 32, 120]
        phi = F.max_pool2d(conv(x, "phi.0"), 2).flatten(2)      # [N, 32, 30]
        attn = torch.softmax(torch.einsum("nci,ncj->nij", theta, phi), dim=-1)
        y = torch.einsum("nij,ncj->nci", attn, g).reshape(3, 32, 10, 12)
        z = F.group_norm(conv(y, "W.0"), 32, w["W.1.weight"], w["W.1.bias"]) + x
    torch.testing.assert_close(got, z, atol=1e-5, rtol=1e-5)


def test_nonlocal_starts_as_identity_and_keys_are_detectron2s():
    cfg = load_config("densepose_rcnn_R_50_FPN_DL_s1x",
                      ["MODEL.ROI_DENSEPOSE_HEAD.DEEPLAB.NONLOCAL_ON", "1"])
    head = DeepLabHead(cfg.densepose, 256)
    keys = {k for k in head.state_dict() if k.startswith("NLBlock.")}
    assert keys == {"NLBlock.g.0.weight", "NLBlock.g.0.bias", "NLBlock.theta.weight",
                    "NLBlock.theta.bias", "NLBlock.phi.0.weight", "NLBlock.phi.0.bias",
                    "NLBlock.W.0.weight", "NLBlock.W.0.bias", "NLBlock.W.1.weight",
                    "NLBlock.W.1.bias"}
    x = torch.randn(2, 256, 14, 14)
    with torch.no_grad():  # W's GroupNorm starts at zero: the block adds nothing yet
        torch.testing.assert_close(head.NLBlock(x), x)
    scripted = torch.jit.script(head.eval())
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), head(x))


def test_aspp_branches_and_image_pooling():
    aspp = _randomize(ASPP(64, 32)).eval()
    x = torch.randn(2, 64, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = aspp(x)
        outs = []
        for i, rate in enumerate((None, 6, 12, 56)):
            seq = aspp.convs[i]
            y = F.conv2d(x, seq[0].weight, padding=rate or 0, dilation=rate or 1)
            outs.append(F.relu(F.group_norm(y, 32, seq[1].weight, seq[1].bias)))
        pool = aspp.convs[4]
        y = F.conv2d(x.mean((2, 3), keepdim=True), pool[1].weight)
        y = F.relu(F.group_norm(y, 32, pool[2].weight, pool[2].bias))
        outs.append(F.interpolate(y, size=(28, 28), mode="bilinear", align_corners=False))
        ref = F.relu(F.conv2d(torch.cat(outs, 1), aspp.project[0].weight))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert set(aspp.state_dict()) >= {"convs.4.1.weight", "convs.4.2.weight",
                                      "project.0.weight", "convs.3.0.weight"}


def test_traced_group_norm_equals_group_norm_and_takes_zero_rois():
    gn = _randomize(GroupNorm(32, 64))
    x = torch.randn(3, 64, 7, 7)
    traced = torch.jit.trace(gn, x)
    torch.testing.assert_close(traced(x), F.group_norm(x, 32, gn.weight, gn.bias), atol=1e-5,
                               rtol=1e-5)
    assert traced(x[:0]).shape == (0, 64, 7, 7)


@pytest.mark.parametrize("norm", ["GN", ""])
def test_head_norm_switch_changes_the_keys(norm):
    cfg = load_config("densepose_rcnn_R_50_FPN_DL_s1x",
                      ["MODEL.ROI_DENSEPOSE_HEAD.DEEPLAB.NORM", norm])
    keys = set(build_model(cfg).roi_heads.densepose_head.state_dict())
    assert ("body_conv_fcn1.norm.weight" in keys) == (norm == "GN")
    assert ("body_conv_fcn1.bias" in keys) == (norm == "")
