"""Instance and referring segmentation: the mask loss and post-processing against hand computations, a tiny model
that overfits one image's masks, then every way a user reaches it (processor, pipelines from a saved folder, the
stock `image-segmentation` pipeline with a closed vocabulary, the all-heads class) and the errors they may hit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from transformers import AutoModelForInstanceSegmentation, pipeline

from glipv2 import (
    Glipv2Config,
    Glipv2ForGrounding,
    Glipv2ForInstanceSegmentation,
    Glipv2ForPreTraining,
    Glipv2ForSegmentation,
    Glipv2SegmentationOutput,
)
from glipv2.heads import Glipv2MaskHead, roi_align_separable
from glipv2.loss import jitter_boxes, mask_loss, mask_targets
from glipv2.post_processing import instance_segments, paste_masks
from tests.conftest import bert_processor, tiny_config

LABELS = ["red square", "blue circle"]
STEPS = 180


def _scene() -> tuple[Image.Image, np.ndarray]:
    """A 128x128 image with a red square and a blue disc, and their exact masks `(2, 128, 128)` (same PIL calls)."""
    image = Image.new("RGB", (128, 128), (40, 40, 40))
    draw = ImageDraw.Draw(image)
    masks = []
    for shape, xy, colour in (
        ("rectangle", [30, 40, 80, 100], (220, 30, 30)),
        ("ellipse", [90, 10, 120, 40], (30, 30, 220)),
    ):
        getattr(draw, shape)(xy, fill=colour)
        canvas = Image.new("L", (128, 128), 0)
        getattr(ImageDraw.Draw(canvas), shape)(xy, fill=1)
        masks.append(np.asarray(canvas, dtype=bool))
    return image, np.stack(masks)


def _boxes(masks: np.ndarray) -> list[list[float]]:
    """Continuous xyxy boxes of masks (the pixels' outer edges)."""
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
    return boxes


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------------------------------------ hand computations
def test_mask_targets_and_loss_by_hand() -> None:
    masks = torch.zeros(1, 8, 8)
    masks[0, :, :4] = 1  # left half
    targets = mask_targets(masks, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), 2)
    torch.testing.assert_close(targets, torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]))
    # the box's right half only: all background; a box straddling the edge: half covered
    torch.testing.assert_close(mask_targets(masks, torch.tensor([[4.0, 0.0, 8.0, 8.0]]), 2), torch.zeros(1, 2, 2))
    straddle = mask_targets(masks, torch.tensor([[2.0, 0.0, 6.0, 8.0]]), 1)
    torch.testing.assert_close(straddle, torch.tensor([[[0.5]]]))

    logits = torch.tensor([[[2.0, -1.0], [0.0, 3.0]]])
    p = 1 / (1 + np.exp(-np.array([2.0, -1.0, 0.0, 3.0])))
    t = np.array([1.0, 0.0, 1.0, 0.0])
    expected = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert float(mask_loss(logits, targets)) == pytest.approx(expected, rel=1e-6)
    empty = mask_loss(torch.zeros(0, 2, 2, requires_grad=True), torch.zeros(0, 2, 2))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_jitter_moves_each_side_by_at_most_its_share() -> None:
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 2.0, 2.0]])
    torch.testing.assert_close(jitter_boxes(boxes, 0.0), boxes)
    for _ in range(20):
        moved = jitter_boxes(boxes, 0.1)
        size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        assert ((moved[:, :2] - boxes[:, :2]).abs() <= 0.1 * size[:, :2] + 1e-6).all()
        assert (moved[:, 2:] - moved[:, :2] >= 1.0 - 1e-6).all()


def test_mask_head_pools_every_box_from_the_stride_4_map() -> None:
    head = Glipv2MaskHead(hidden_size=1, num_convs=0, roi_size=2, stride=4)
    with torch.no_grad():  # the merging convolution passes its input through
        head.merge.weight.zero_()
        head.merge.weight[0, 0, 1, 1] = 1.0
        head.merge.bias.zero_()
    # P2 holds each cell's column index, the fused P3 (upsampled 2x) adds 10 on its second column of cells
    fine = torch.arange(16.0).repeat(16, 1)[None, None]
    fused = torch.zeros(1, 1, 8, 8)
    fused[..., 1] = 10.0
    # box x 8..24 px = map columns 1.5..5.5 (aligned): bins 1.5-3.5 and 3.5-5.5, samples at 2, 3 and 4, 5
    pooled = head.pool((fused, fine), [torch.tensor([[8.0, 8.0, 24.0, 24.0]])])
    assert pooled[0, 0, 0].tolist() == [2.5 + 10.0, 4.5]
    # a box of a large object is pooled from the same map
    large = head.pool((fused, fine), [torch.tensor([[0.0, 0.0, 64.0, 64.0]])])
    assert large.shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="P2"):
        head.pool((fused, None), [torch.tensor([[8.0, 8.0, 24.0, 24.0]])])


def test_separable_roi_align_equals_torchvision_forward_and_backward() -> None:
    from torchvision.ops import roi_align

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 5, 9, 11, generator=generator, dtype=torch.float64, requires_grad=True)
    corners = torch.rand(40, 2, generator=generator, dtype=torch.float64) * 60 - 12  # some boxes leave the map
    sides = torch.rand(40, 2, generator=generator, dtype=torch.float64) * 40 + 0.1
    images = torch.randint(0, 3, (40, 1), generator=generator).double()
    rois = torch.cat([images, corners, corners + sides], dim=1)
    for scale in (0.25, 0.5):
        expected = roi_align(features, rois, 7, spatial_scale=scale, sampling_ratio=2, aligned=True)
        pooled = roi_align_separable(features, rois, 7, scale, 2)
        torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-12)
        weights = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
        (expected_grad,) = torch.autograd.grad((expected * weights).sum(), features)
        (grad,) = torch.autograd.grad((pooled * weights).sum(), features)
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_separable(features, rois, 7, 0.25, 0)


def test_the_mask_head_leaves_the_shared_initial_weights_unchanged() -> None:
    """P2 and the mask head draw nothing from the global generator: with the same seed, a model with them starts
    from the weights a model without them starts from (a recipe that adds masks trains the same shared model)."""
    states = []
    for use_mask_head in (False, True):
        torch.manual_seed(0)
        states.append(Glipv2ForPreTraining(tiny_config(use_mask_head=use_mask_head)).state_dict())
    without, with_masks = states
    added = {key for key in with_masks if key not in without}
    assert added >= {"mask_head.merge.weight", "model.fpn.fine_lateral_conv.weight"}
    for key, value in without.items():
        assert torch.equal(with_masks[key], value), key
    # P2's own convolutions are initialised (FPN's kaiming-uniform rule), not left at zero
    assert with_masks["model.fpn.fine_output_conv.weight"].abs().sum() > 0


def _hand_made_outputs() -> Glipv2SegmentationOutput:
    """Two 2x2 levels (8 anchors) and a 4-token prompt `[CLS] a b [SEP]`: anchor 5 grounds "a" strongly, anchor 1
    weakly (probability 0.12), the rest not at all; anchors 5 and 1 are the mask candidates, with left-half and
    full masks."""
    logits = torch.full((1, 8, 4), -20.0)
    logits[0, 5, 1] = 4.0
    logits[0, 1, 1] = -2.0  # probability 0.12: under 0.3
    centerness = torch.full((1, 8), 20.0)
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5]]).repeat(1, 8, 1)
    boxes[0, 5] = torch.tensor([0.25, 0.5, 0.5, 1.0])  # left half of the image
    pred_masks = torch.full((1, 2, 28, 28), -10.0)
    pred_masks[0, 0, :, :14] = 10.0  # candidate 0 (anchor 5): left half of its box
    pred_masks[0, 1] = 10.0
    return Glipv2SegmentationOutput(
        logits=logits,
        pred_boxes=boxes,
        centerness=centerness,
        spatial_shapes=torch.tensor([[2, 2], [2, 2]]),
        image_sizes=torch.tensor([[40, 40]]),
        input_ids=torch.tensor([[101, 1037, 1038, 102]]),
        text_attention_mask=torch.ones(1, 4, dtype=torch.long),
        pred_masks=pred_masks,
        mask_anchor_indices=torch.tensor([[5, 1]]),
    )


def test_post_processing_on_hand_made_logits() -> None:
    processor = bert_processor(40)
    outputs = _hand_made_outputs()
    (result,) = processor.image_processor.post_process_instance_segmentation(
        outputs, threshold=0.3, target_sizes=[(20, 80)], positive_maps=[torch.tensor([[0.0, 1.0, 0.0, 0.0]])]
    )
    # only anchor 5 passes 0.3: score sqrt(sigmoid(4) * sigmoid(20)); its box is the left half of an 80x20 image
    assert result["scores"].tolist() == pytest.approx([float(torch.sigmoid(torch.tensor(4.0)).sqrt())], abs=1e-6)
    torch.testing.assert_close(result["boxes"], torch.tensor([[0.0, 0.0, 40.0, 20.0]]))
    expected = np.zeros((20, 80), dtype=bool)
    expected[:, :20] = True  # the left half of the box
    assert result["masks"].shape == (1, 20, 80)
    assert ((result["masks"][0] > 0.5).numpy() == expected).all()
    assert result["segments_info"] == [
        {"id": 0, "label_id": 0, "was_fused": False, "score": result["scores"][0].item()}
    ]
    segmentation = result["segmentation"]
    assert segmentation.shape == (20, 80) and segmentation.dtype == torch.int32
    assert ((segmentation == 0).numpy() == (result["masks"][0] > 0.5).numpy()).all()
    assert (segmentation[:, 40:] == -1).all()
    # a lower threshold brings anchor 1 (the centre box, full mask); anchors outside the candidates never come
    (low,) = processor.image_processor.post_process_instance_segmentation(
        outputs, threshold=0.0, target_sizes=[(20, 80)], positive_maps=[torch.tensor([[0.0, 1.0, 0.0, 0.0]])]
    )
    assert len(low["scores"]) == 2
    torch.testing.assert_close(low["boxes"][1], torch.tensor([20.0, 5.0, 60.0, 15.0]))
    # the processor names the labels from the prompt
    (named,) = processor.post_process_instance_segmentation(outputs, threshold=0.3, target_sizes=[(20, 80)])
    assert named["text_labels"] == ["a b"] and named["segments_info"][0]["label"] == "a b"


def test_segmentation_map_overlaps_binary_maps_and_rle_round_trip() -> None:
    masks = torch.zeros(3, 6, 8)
    masks[0, 1:5, 1:5] = 0.9  # 16 pixels
    masks[1, 3:6, 3:8] = 0.8  # 15 pixels, 4 shared with the first
    masks[2, 1:5, 2:5] = 0.7  # inside the first: hidden in the map
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 0, 1])
    result = instance_segments(scores, labels, masks, overlap_mask_area_threshold=0.5)
    segmentation = result["segmentation"]
    assert [s["label_id"] for s in result["segments_info"]] == [1, 0]  # the third keeps 0 of its pixels
    assert int((segmentation == 0).sum()) == 16 and int((segmentation == 1).sum()) == 11
    strict = instance_segments(scores, labels, masks, overlap_mask_area_threshold=0.8)
    assert [s["id"] for s in strict["segments_info"]] == [0]  # 11/15 < 0.8: the second is dropped from the map
    binary = instance_segments(scores, labels, masks, return_binary_maps=True)
    assert binary["segmentation"].shape == (3, 6, 8) and len(binary["segments_info"]) == 3
    coco = instance_segments(scores, labels, masks, return_coco_annotation=True)
    for rle, mask in zip(coco["segmentation"], binary["segmentation"]):
        assert isinstance(rle["counts"], str) and rle["size"] == [6, 8]
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert (decoded.astype(bool) == mask.numpy()).all()
        assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) == int(mask.sum())


def test_paste_masks_into_boxes() -> None:
    logits = torch.full((1, 28, 28), -10.0)
    logits[0, :14] = 10.0  # top half of the box
    pasted = paste_masks(logits, torch.tensor([[10.0, 20.0, 50.0, 60.0]]), 80, 70)
    expected = np.zeros((80, 70), dtype=bool)
    expected[20:40, 10:50] = True
    assert pasted.shape == (1, 80, 70)
    assert ((pasted[0] > 0.5).numpy() == expected).all()  # exact: pixel centres inside the box's top half
    full = paste_masks(torch.full((1, 28, 28), 10.0), torch.tensor([[10.5, 20.0, 50.0, 60.4]]), 80, 70)[0] > 0.5
    expected = np.zeros((80, 70), dtype=bool)
    expected[20:60, 11:50] = True  # centre 10.5 is on the edge (probability 1/2, not above); 11.5, ..., 59.5 inside
    assert ((full.numpy()) == expected).all()
    assert paste_masks(logits[:0], torch.zeros(0, 4), 5, 6).shape == (0, 5, 6)


# ------------------------------------------------------------------------------------------------------- training
def _encoding(processor, image: Image.Image, masks: np.ndarray, labels: list[str] = LABELS) -> dict:  # noqa: ANN001
    """The processor's inputs and labels for a prompt of `labels` (a subset of LABELS) on the scene."""
    prompt = processor.build_prompt(labels)
    rows = [LABELS.index(name) for name in labels]
    boxes = _boxes(masks)
    targets = [{"boxes": [boxes[row] for row in rows], "spans": [[span] for span in prompt.label_spans]}]
    targets[0]["masks"] = masks[rows]
    return processor(images=image, text=[labels], grounding_targets=targets)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny Glipv2ForInstanceSegmentation trained on one image's boxes and masks, saved with its processor. The
    prompts alternate between both labels and each label alone (a referring expression), so that each is grounded
    wherever it stands in a prompt."""
    torch.manual_seed(0)
    processor = bert_processor(128)
    image, masks = _scene()
    encodings = [_encoding(processor, image, masks, labels) for labels in (LABELS, LABELS[1:], LABELS[:1])]
    model = Glipv2ForInstanceSegmentation(tiny_config(fusion_attention_dropout=0.0, use_mask_head=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for step in range(STEPS):
        encoding = encodings[step % len(encodings)]
        model.train()
        out = model(**{k: v for k, v in encoding.items() if k != "labels"}, labels=encoding["labels"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in out.loss_dict.items()})
    model.eval()
    folder = tmp_path_factory.mktemp("segmentation") / "tiny-segmentation"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    inputs = {k: v for k, v in encodings[0].items() if k != "labels"}
    return {"model": model, "processor": processor, "folder": folder, "history": history, "inputs": inputs}


def _best_masks(result: dict) -> dict[str, np.ndarray]:
    """The best instance's binary mask per label name."""
    best = {}
    for label, mask in zip(result["text_labels"], result["masks"]):
        best.setdefault(label, mask.numpy() > 0.5)
    return best


def test_tiny_model_overfits_one_images_masks(trained: dict) -> None:
    first, last = trained["history"][0], trained["history"][-3]  # both the first and this one: the full prompt
    print(f"loss_mask {first['loss_mask']:.3f} -> {last['loss_mask']:.3f}")
    assert last["loss_mask"] <= 0.25 * first["loss_mask"]
    _, masks = _scene()
    with torch.no_grad():
        outputs = trained["model"](**trained["inputs"])
    assert outputs.pred_masks.shape == (1, 100, 28, 28) and outputs.mask_anchor_indices.shape == (1, 100)
    (result,) = trained["processor"].post_process_instance_segmentation(
        outputs, threshold=0.3, target_sizes=[(128, 128)], text_labels=[LABELS]
    )
    best = _best_masks(result)
    for index, label in enumerate(LABELS):
        iou = _iou(best[label], masks[index])
        print(f"{label}: mask IoU {iou:.3f}")
        assert iou >= 0.9
    # the COCO results form of the same masks
    (coco,) = trained["processor"].post_process_instance_segmentation(
        outputs, threshold=0.3, target_sizes=[(128, 128)], text_labels=[LABELS], return_coco_annotation=True
    )
    decoded = mask_utils.decode({**coco["segmentation"][0], "counts": coco["segmentation"][0]["counts"].encode()})
    assert (decoded.astype(bool) == (result["masks"][0].numpy() > 0.5)).all()


def test_masks_follow_the_image_resize(trained: dict) -> None:
    """Targets given at the original size are resized with the image; a twice-as-large copy segments the same."""
    processor = trained["processor"]
    image, masks = _scene()
    big = image.resize((256, 256), Image.Resampling.NEAREST)
    big_masks = masks.repeat(2, axis=1).repeat(2, axis=2)
    labels = _encoding(processor, big, big_masks)["labels"][0]
    assert labels["masks"].shape == (2, 128, 128) and labels["masks"].dtype == torch.bool
    assert (labels["masks"].numpy() == masks).mean() >= 0.99
    inputs = processor(images=big, text=[LABELS])
    with torch.no_grad():
        outputs = trained["model"](**inputs)
    (result,) = processor.post_process_instance_segmentation(
        outputs, threshold=0.3, target_sizes=[(256, 256)], text_labels=[LABELS]
    )
    best = _best_masks(result)
    for index, label in enumerate(LABELS):
        assert _iou(best[label], big_masks[index]) >= 0.85


def test_batch_of_different_sizes_equals_singles(trained: dict) -> None:
    model, processor = trained["model"], trained["processor"]
    image, _ = _scene()
    images = [image, image.crop((0, 0, 128, 96))]
    with torch.no_grad():
        batch = model(**processor(images=images, text=[LABELS, LABELS]))
        singles = [model(**processor(images=one, text=[LABELS])) for one in images]
    sizes = [(128, 128), (96, 128)]
    batched = processor.post_process_instance_segmentation(batch, threshold=0.3, target_sizes=sizes)
    for index, single in enumerate(singles):
        (alone,) = processor.post_process_instance_segmentation(single, threshold=0.3, target_sizes=[sizes[index]])
        torch.testing.assert_close(batched[index]["boxes"], alone["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(batched[index]["masks"], alone["masks"], atol=1e-3, rtol=1e-4)


def test_outputs_equal_after_save_and_auto_load(trained: dict) -> None:
    loaded = AutoModelForInstanceSegmentation.from_pretrained(trained["folder"]).eval()
    assert type(loaded) is Glipv2ForInstanceSegmentation
    with torch.no_grad():
        a, b = trained["model"](**trained["inputs"]), loaded(**trained["inputs"])
    torch.testing.assert_close(a.pred_masks, b.pred_masks, atol=1e-4, rtol=1e-4)
    assert torch.equal(a.mask_anchor_indices, b.mask_anchor_indices)


def test_fewer_mask_candidates_give_the_same_masks_for_the_most_confident_anchors(trained: dict) -> None:
    """`mask_candidates=k` (what referring segmentation asks for) masks the k most confident anchors only, each as
    the default call masks it."""
    with torch.no_grad():
        full = trained["model"](**trained["inputs"])
        few = trained["model"](**trained["inputs"], mask_candidates=3)
    assert few.pred_masks.shape[1] == 3 and full.pred_masks.shape[1] == trained["model"].config.mask_candidates
    assert torch.equal(few.mask_anchor_indices, full.mask_anchor_indices[:, :3])
    torch.testing.assert_close(few.pred_masks, full.pred_masks[:, :3], atol=1e-5, rtol=1e-5)


def test_mask_threshold_skips_only_candidates_no_label_can_pass(trained: dict) -> None:
    """`mask_threshold=t` (what `detect_labels` passes): candidates whose best token probability is at most t get no
    mask; the others keep theirs, and post-processing at t finds the same instances with the same masks."""
    model, inputs = trained["model"], trained["inputs"]
    with torch.no_grad():
        full = model(**inputs)
        best = (full.logits.sigmoid() * inputs["attention_mask"][:, None, :]).amax(-1)
        threshold = float(best.gather(1, full.mask_anchor_indices).median())
        skipped = model(**inputs, mask_threshold=threshold)
    kept = skipped.mask_anchor_indices >= 0
    assert kept.any() and (~kept).any()
    assert torch.equal(skipped.mask_anchor_indices[kept], full.mask_anchor_indices[kept])
    assert bool((best.gather(1, full.mask_anchor_indices)[kept] > threshold).all())
    assert bool((best.gather(1, full.mask_anchor_indices)[~kept] <= threshold).all())
    torch.testing.assert_close(skipped.pred_masks[kept], full.pred_masks[kept], atol=1e-5, rtol=1e-5)
    assert not skipped.pred_masks[~kept].any()
    post = trained["processor"].post_process_instance_segmentation
    sizes = [(128, 128)]
    (a,) = post(full, threshold=threshold, target_sizes=sizes, text_labels=[LABELS])
    (b,) = post(skipped, threshold=threshold, target_sizes=sizes, text_labels=[LABELS])
    assert a["text_labels"] and a["text_labels"] == b["text_labels"]
    assert torch.equal(torch.as_tensor(a["scores"]), torch.as_tensor(b["scores"]))
    assert np.array_equal(np.asarray(a["masks"]), np.asarray(b["masks"]))


# ------------------------------------------------------------------------------------------------------ pipelines
def test_pipelines_from_a_saved_folder(trained: dict) -> None:
    image, masks = _scene()
    segment = pipeline("instance-segmentation", model=str(trained["folder"]))
    instances = segment(image, candidate_labels=LABELS, threshold=0.3)
    assert {"score", "label", "box", "mask"} == set(instances[0])
    assert [i["score"] for i in instances] == sorted((i["score"] for i in instances), reverse=True)
    for index, label in enumerate(LABELS):
        best = next(i for i in instances if i["label"] == label)
        assert best["mask"].mode == "L" and best["mask"].size == (128, 128)
        assert _iou(np.asarray(best["mask"]) > 0, masks[index]) >= 0.9
    refer = pipeline("referring-segmentation", model=str(trained["folder"]))
    for index, label in enumerate(LABELS):
        result = refer(image, label)
        assert _iou(np.asarray(result["mask"]) > 0, masks[index]) >= 0.9, label
    assert result["instances"][0]["score"] == result["score"]
    with pytest.raises(ValueError, match="expression is empty"):
        refer(image, "   ")
    with pytest.raises(ValueError, match="candidate_labels is empty"):
        segment(image, candidate_labels=[])


def test_instance_segmentation_pipeline_runs_the_backbone_once_for_many_chunks(trained: dict) -> None:
    """Labels over several prompt chunks: one image-backbone pass (detect_labels), the same instances as the model
    and the processor's post-processing give, chunk by chunk."""
    image, _ = _scene()
    segment = pipeline("instance-segmentation", model=str(trained["folder"]))
    labels = LABELS + [f"shape number {index}" for index in range(100)]
    prompts = segment.processor.build_prompts(labels, max_length=segment.model.config.max_text_length)
    assert len(prompts) >= 2
    calls = []
    hook = segment.model.model.vision_backbone.register_forward_hook(lambda *args: calls.append(1))
    try:
        instances = segment(image, candidate_labels=labels, threshold=0.1)
    finally:
        hook.remove()
    assert len(calls) == 1
    expected = []
    for prompt in prompts:  # the model on each chunk, post-processed by the processor
        inputs = segment.processor(images=image, text=prompt.text)
        with torch.no_grad():
            outputs = segment.model(**inputs)
        positive_map = segment.processor.positive_map(prompt.text, [[span] for span in prompt.label_spans])
        positive_map = torch.nn.functional.pad(positive_map, (0, outputs.logits.shape[-1] - positive_map.shape[1]))
        (result,) = segment.image_processor.post_process_instance_segmentation(
            outputs, threshold=0.1, target_sizes=[(128, 128)], return_binary_maps=True, positive_maps=[positive_map]
        )
        for score, label, mask in zip(result["scores"], result["labels"], result["segmentation"]):
            expected.append((round(float(score), 4), labels[prompt.label_ids[int(label)]], mask.numpy()))
    assert len(instances) == 100  # the pipeline's top_k
    assert [i["score"] for i in instances] == sorted((score for score, _, _ in expected), reverse=True)[:100]

    # equal scores may come in either order: compare the instances scored above the 100th score as sorted lists
    def key(item: tuple) -> tuple:
        return -item[0], item[1], item[2].tobytes()

    cut = instances[-1]["score"]
    found = [(i["score"], i["label"], np.asarray(i["mask"]) > 0) for i in instances if i["score"] > cut]
    wanted = [item for item in expected if item[0] > cut]
    assert found and [key(item) for item in sorted(found, key=key)] == [key(item) for item in sorted(wanted, key=key)]


def test_stock_image_segmentation_pipeline_with_a_closed_vocabulary(trained: dict, tmp_path: Path) -> None:
    processor = trained["processor"]
    model = Glipv2ForSegmentation.from_pretrained(trained["folder"]).eval()
    model.set_vocabulary(processor, LABELS)
    model.save_pretrained(tmp_path / "closed")
    processor.image_processor.save_pretrained(tmp_path / "closed")  # no tokenizer: the prompt is in the config
    image, masks = _scene()
    segments = pipeline("image-segmentation", model=str(tmp_path / "closed"))(image, threshold=0.3)
    for index, label in enumerate(LABELS):
        best = next(s for s in segments if s["label"] == label)
        assert _iou(np.asarray(best["mask"]) > 0, masks[index]) >= 0.85  # the map: a pixel goes to one segment
    # closed and open vocabulary give the same instances
    with torch.no_grad():
        closed = model(**processor.image_processor(images=image, return_tensors="pt"))
        open_ = trained["model"](**trained["inputs"])
    (a,) = processor.image_processor.post_process_instance_segmentation(closed, threshold=0.3)
    (b,) = processor.post_process_instance_segmentation(open_, threshold=0.3, text_labels=[LABELS])
    torch.testing.assert_close(a["scores"], b["scores"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a["masks"], b["masks"], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------- all heads and errors
def test_all_heads_class_trains_the_mask_head_and_serves_instance_segmentation(trained: dict, tmp_path: Path) -> None:
    processor = trained["processor"]
    image, masks = _scene()
    encoding = _encoding(processor, image, masks)
    config = tiny_config(use_mask_head=True)
    model = Glipv2ForPreTraining(config)
    out = model(**{k: v for k, v in encoding.items() if k != "labels"}, labels=encoding["labels"])
    assert "loss_mask" in out.loss_dict and out.loss_dict["loss_mask"].requires_grad
    without = [{k: v for k, v in label.items() if k != "masks"} for label in encoding["labels"]]
    out = model(**{k: v for k, v in encoding.items() if k != "labels"}, labels=without)
    assert "loss_mask" not in out.loss_dict
    model.save_pretrained(tmp_path / "all")
    loaded = Glipv2ForInstanceSegmentation.from_pretrained(tmp_path / "all")
    torch.testing.assert_close(loaded.mask_head.predictor.weight, model.mask_head.predictor.weight)
    # a checkpoint without a mask head keeps its keys; loading it for segmentation asks for the head
    plain = Glipv2ForPreTraining(tiny_config())
    assert not any(key.startswith("mask_head.") for key in plain.state_dict())
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="use_mask_head=True"):
        Glipv2ForInstanceSegmentation.from_pretrained(tmp_path / "plain")
    fresh = Glipv2ForInstanceSegmentation.from_pretrained(tmp_path / "plain", use_mask_head=True)
    fresh_state, plain_state = fresh.state_dict(), plain.state_dict()
    # every weight of the checkpoint is loaded; the new ones are the mask head's and P2's (the FPN's stride-4 level
    # and the norm Swin puts on each map it outputs)
    new = {key.rsplit(".", 1)[0] for key in fresh_state if key not in plain_state}
    assert {key for key in new if not key.startswith("mask_head.")} == {
        "model.fpn.fine_lateral_conv",
        "model.fpn.fine_output_conv",
        "model.vision_backbone.hidden_states_norms.stage1",
    }
    shared = [key for key in fresh_state if key in plain_state]
    assert shared and all(torch.equal(fresh_state[key], plain_state[key]) for key in shared)


def test_bad_masks_are_named(trained: dict) -> None:
    processor = trained["processor"]
    image, masks = _scene()
    prompt = processor.build_prompt(LABELS)
    for wrong, found in ((masks[:, :64, :64], r"\(2, 64, 64\)"), (masks[:1], r"\(1, 128, 128\)")):
        targets = [{"boxes": _boxes(masks), "spans": [[s] for s in prompt.label_spans], "masks": wrong}]
        with pytest.raises(ValueError, match=r"Image 0: masks must be \(num_boxes=2, 128, 128\).*got " + found):
            processor(images=image, text=[LABELS], grounding_targets=targets)
    encoding = _encoding(processor, image, masks)
    labels = [{**encoding["labels"][0], "masks": encoding["labels"][0]["masks"][:, :10]}]
    model = trained["model"]
    with pytest.raises(ValueError, match=r"labels\[0\]\['masks'\] must be \(num_boxes=2, 128, 128\)"):
        model(**{k: v for k, v in encoding.items() if k != "labels"}, labels=labels)
    with pytest.raises(ValueError, match="no masks"):
        grounding = Glipv2ForGrounding(tiny_config()).eval()
        with torch.no_grad():
            outputs = grounding(**trained["inputs"])
        processor.post_process_instance_segmentation(outputs)
    with pytest.raises(StrictDataclassClassValidationError, match=r"mask_roi_size \(0\)"):
        Glipv2Config.from_preset("tiny-random", mask_roi_size=0)


@pytest.mark.parametrize("to_backbone", [True, False])
def test_mask_loss_to_backbone_switch(trained: dict, to_backbone: bool) -> None:
    processor = trained["processor"]
    image, masks = _scene()
    encoding = _encoding(processor, image, masks)
    config = tiny_config(use_mask_head=True, mask_loss_to_backbone=to_backbone)
    model = Glipv2ForInstanceSegmentation(config).train()
    out = model(**{k: v for k, v in encoding.items() if k != "labels"}, labels=encoding["labels"])
    out.loss_dict["loss_mask"].backward()
    assert model.mask_head.predictor.weight.grad.abs().sum() > 0
    learned = {name for name, p in model.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    own = {name for name in learned if name.startswith("fpn.fine_")}  # P2's own convolutions: always trained
    assert own == {f"fpn.fine_{conv}_conv.{kind}" for conv in ("lateral", "output") for kind in ("weight", "bias")}
    assert bool(learned - own) is to_backbone  # the shared weights learn from masks only when asked


def test_a_bfloat16_model_segments() -> None:
    """torchvision's RoIAlign has no bfloat16 kernel: the head pools in float32 (boxes never rounded to bf16)."""
    processor = bert_processor(64)
    model = Glipv2ForInstanceSegmentation(tiny_config(use_mask_head=True, mask_candidates=5)).eval()
    image, _ = _scene()
    inputs = processor(images=image, text=[LABELS])
    with torch.no_grad():
        full = model(**inputs)
        half = model.to(torch.bfloat16)(**{**inputs, "pixel_values": inputs["pixel_values"].bfloat16()})
    assert half.pred_masks.dtype == torch.bfloat16 and half.pred_masks.shape == full.pred_masks.shape


def test_a_detection_outside_the_candidates_is_refused() -> None:
    from glipv2.post_processing import detection_masks

    with pytest.raises(ValueError, match=r"detections at anchors \[9\] are not mask candidates"):
        detection_masks(torch.zeros(2, 4, 4), torch.tensor([5, 7]), torch.tensor([9]), torch.zeros(1, 4), 8, 8)
