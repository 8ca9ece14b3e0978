"""The grounding head: initialisation and outputs checked by hand against the official GLIP head."""

import math

import pytest
import torch
import torch.nn.functional as F

from glipv2.heads import PADDED_TOKEN_LOGIT, Glipv2GroundingHead, Glipv2Scale


def _official_logits(head: Glipv2GroundingHead, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The official VLDyHead dot-product formula, written out for one level."""
    embedding = F.normalize(text, p=2, dim=-1)
    proj_tokens = embedding / 2.0 @ head.text_projection.weight.T + head.text_projection.bias
    bias = embedding @ head.bias_lang + head.bias0
    queries = features.permute(0, 2, 3, 1).reshape(features.shape[0], -1, features.shape[1])
    logits = queries @ proj_tokens.transpose(-1, -2) / head.log_scale.exp() + bias[:, None, :]
    return logits.clamp(min=-50000, max=50000)


def test_head_init_matches_official() -> None:
    torch.manual_seed(0)
    head = Glipv2GroundingHead(hidden_size=64, text_hidden_size=48, num_levels=3, prior_prob=0.01)
    assert head.bias0.shape == (1,) and head.log_scale.shape == (1,) and head.bias_lang.shape == (48,)
    torch.testing.assert_close(head.bias0, torch.tensor([-math.log(99.0)]))
    assert head.log_scale.item() == 0.0 and head.bias_lang.abs().sum() == 0
    assert [s.scale.item() for s in head.scales] == [1.0, 1.0, 1.0]
    for conv in (head.bbox_pred, head.centerness):
        assert conv.bias.abs().sum() == 0
        assert 0.005 < conv.weight.std().item() < 0.015
    assert head.text_projection.weight.shape == (64, 48)
    names = {name for name, _ in head.named_parameters()}
    assert {"bbox_pred.weight", "centerness.bias", "scales.2.scale", "text_projection.weight", "bias0"} <= names


def test_head_forward_values() -> None:
    torch.manual_seed(0)
    head = Glipv2GroundingHead(hidden_size=8, text_hidden_size=6, num_levels=2, log_scale_init=0.3)
    with torch.no_grad():
        head.bias_lang.normal_()
        head.scales[1].scale.fill_(2.0)
    features = (torch.randn(2, 8, 2, 3), torch.randn(2, 8, 1, 2))
    text = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    logits, box_regression, centerness = head(features, text, mask)
    assert logits.shape == (2, 8, 4) and box_regression.shape == (2, 8, 4) and centerness.shape == (2, 8)

    expected = torch.cat([_official_logits(head, level, text) for level in features], dim=1)
    torch.testing.assert_close(logits[0], expected[0])
    torch.testing.assert_close(logits[1, :, :2], expected[1, :, :2])
    assert (logits[1, :, 2:] == PADDED_TOKEN_LOGIT).all()

    # Row-major flattening: anchor 4 is level 0, row 1, col 1; anchor 7 is level 1, col 1 (scale 2 applies).
    level0_deltas = head.bbox_pred(features[0])[:, :, 1, 1]
    torch.testing.assert_close(box_regression[:, 4], level0_deltas)
    torch.testing.assert_close(box_regression[:, 7], 2.0 * head.bbox_pred(features[1])[:, :, 0, 1])
    torch.testing.assert_close(centerness[:, 4], head.centerness(features[0])[:, 0, 1, 1])


def test_head_logit_clamp_and_level_check() -> None:
    head = Glipv2GroundingHead(hidden_size=4, text_hidden_size=4, num_levels=1)
    with torch.no_grad():
        head.log_scale.fill_(-20.0)  # temperature exp(-20): huge logits
    logits, _, _ = head((torch.full((1, 4, 1, 1), 100.0),), torch.ones(1, 2, 4), torch.ones(1, 2))
    assert logits.abs().max().item() == 50000.0
    with pytest.raises(ValueError, match="feature levels"):
        head((torch.zeros(1, 4, 1, 1),) * 2, torch.ones(1, 2, 4), torch.ones(1, 2))


def test_scale_module() -> None:
    scale = Glipv2Scale(0.5)
    assert scale.scale.shape == (1,)
    torch.testing.assert_close(scale(torch.tensor([2.0, 4.0])), torch.tensor([1.0, 2.0]))
