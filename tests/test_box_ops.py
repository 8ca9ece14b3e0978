"""Box operations: anchors and the box coder checked by hand against the official GLIP conventions, conversions and
IoU against torchvision."""

import math

import pytest
import torch

from glipv2.box_ops import Glipv2BoxCoder, generate_anchors


def test_anchors_two_levels_by_hand() -> None:
    # Official generate_anchors(stride, (8 * stride,), (1.0,)): centre (stride - 1) / 2,
    # half side 0.5 * (8 * stride - 1).
    # stride 8: centre 3.5, half 31.5 -> [-28, -28, 35, 35]; stride 16: centre 7.5, half 63.5 -> [-56, -56, 71, 71].
    anchors = generate_anchors(torch.tensor([[2, 3], [1, 1]]), strides=[8, 16])
    expected = torch.tensor(
        [
            [-28.0, -28.0, 35.0, 35.0],  # level 0, row 0, col 0
            [-20.0, -28.0, 43.0, 35.0],  # row 0, col 1 (x shift 8)
            [-12.0, -28.0, 51.0, 35.0],  # row 0, col 2
            [-28.0, -20.0, 35.0, 43.0],  # row 1, col 0 (y shift 8)
            [-20.0, -20.0, 43.0, 43.0],
            [-12.0, -20.0, 51.0, 43.0],
            [-56.0, -56.0, 71.0, 71.0],  # level 1
        ]
    )
    assert anchors.dtype == torch.float32
    torch.testing.assert_close(anchors, expected, rtol=0, atol=0)


def test_anchors_other_scale_and_dtype() -> None:
    # stride 4, scale 2: centre 1.5, half 0.5 * (8 - 1) = 3.5 -> [-2, -2, 5, 5]; second column shifted by 4.
    anchors = generate_anchors(torch.tensor([[1, 2]]), strides=[4], anchor_scale=2.0, dtype=torch.float64)
    assert anchors.dtype == torch.float64
    expected = torch.tensor([[-2.0, -2.0, 5.0, 5.0], [2.0, -2.0, 9.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(anchors, expected)
    with pytest.raises(ValueError, match="strides"):
        generate_anchors(torch.tensor([[1, 2]]), strides=[4, 8])


def test_box_coder_encode_by_hand() -> None:
    coder = Glipv2BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0]])  # width 10 (+1), centre 4.5
    gt = torch.tensor([[2.0, 2.0, 11.0, 11.0]])  # width 10, centre 6.5 -> dx = 10 * 2 / 10 = 2
    torch.testing.assert_close(coder.encode(gt, anchors), torch.tensor([[2.0, 2.0, 0.0, 0.0]]))
    gt = torch.tensor([[0.0, 0.0, 19.0, 4.0]])  # width 20, height 5, centre (9.5, 2)
    expected = torch.tensor([[10 * 5 / 10, 10 * -2.5 / 10, 5 * math.log(2.0), 5 * math.log(0.5)]])
    torch.testing.assert_close(coder.encode(gt, anchors), expected)


def test_box_coder_decode_by_hand_and_clamp() -> None:
    coder = Glipv2BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 9.0]])
    deltas = torch.tensor([[1.0, -1.0, 5 * math.log(2.0), 0.0], [0.0, 0.0, 100.0, 0.0]])
    # Row 0: centre (0.1 * 10 + 4.5, -0.1 * 10 + 4.5) = (5.5, 3.5), size (20, 10) -> corners centre -+ (size - 1) / 2.
    # Row 1: dw = 20 is clamped to log(1000 / 16): width 62.5 * 10 = 625 around centre 4.5.
    expected = torch.tensor([[-4.0, -1.0, 15.0, 8.0], [4.5 - 312.0, 0.0, 4.5 + 312.0, 9.0]])
    torch.testing.assert_close(coder.decode(deltas, anchors), expected)
    # Leading batch dimensions broadcast over the anchors.
    torch.testing.assert_close(coder.decode(deltas[None], anchors)[0], expected)


def test_box_coder_round_trip() -> None:
    generator = torch.Generator().manual_seed(0)
    coder = Glipv2BoxCoder()
    anchors = generate_anchors(torch.tensor([[4, 5]]), strides=[8])
    xy = torch.rand(20, 2, generator=generator) * 30
    boxes = torch.cat([xy, xy + 1 + torch.rand(20, 2, generator=generator) * 60], dim=1)
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes, rtol=1e-5, atol=1e-4)


def test_conversions_round_trip_and_known_values() -> None:
    from glipv2.box_ops import cxcywh_to_xyxy, xywh_to_xyxy, xyxy_to_cxcywh, xyxy_to_normalized_cxcywh, xyxy_to_xywh

    xyxy = torch.tensor([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 1.0, 2.0]])
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), torch.tensor([[30.0, 50.0, 40.0, 60.0], [0.5, 1.0, 1.0, 2.0]]))
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(xyxy)), xyxy)
    assert xywh_to_xyxy([[10, 20, 40, 60]]).tolist() == [[10.0, 20.0, 50.0, 80.0]]
    assert xywh_to_xyxy([[10, 20, 40, 60]]).dtype == torch.float64  # lists keep Python's precision
    torch.testing.assert_close(xywh_to_xyxy(xyxy_to_xywh(xyxy)), xyxy)
    normalized = xyxy_to_normalized_cxcywh(xyxy[:1], torch.tensor([[100, 200]]))  # (height, width)
    torch.testing.assert_close(normalized, torch.tensor([[0.15, 0.5, 0.2, 0.6]]))


def test_box_iou_equals_torchvision_and_degenerate_pairs_are_zero() -> None:
    torchvision_ops = pytest.importorskip("torchvision.ops")
    from glipv2.box_ops import box_iou, elementwise_giou

    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(2, 30, 2, generator=generator) * 100
    boxes = torch.cat([corners.min(dim=0).values, corners.max(dim=0).values], dim=1)
    torch.testing.assert_close(box_iou(boxes[:20], boxes[10:]), torchvision_ops.box_iou(boxes[:20], boxes[10:]))
    torch.testing.assert_close(
        elementwise_giou(boxes[:15], boxes[15:]),
        torchvision_ops.generalized_box_iou(boxes[:15], boxes[15:]).diagonal(),
        rtol=1e-5,
        atol=1e-5,
    )
    point = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    assert box_iou(point, point).item() == 0.0  # an empty union: 0, not NaN
