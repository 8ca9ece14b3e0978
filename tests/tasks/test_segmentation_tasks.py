"""The instance and referring segmentation tasks: masks travel with their boxes through the training augmentation,
predictions are RLEs at the original size, the scores come from the metrics, the report draws the masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.masks import decode_rle, encode_mask
from tasks.registry import get_task
from tasks.spec import PredictOptions
from tasks.synthetic import generate_synthetic_multitask
from tests.conftest import bert_processor, tiny_config


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_multitask(root, seed=0, num_train=8, num_val=2, image_size=64)
    return root


@pytest.fixture(scope="module")
def processor() -> Any:
    return bert_processor(64)


def _pixel_box(box: torch.Tensor, height: int, width: int) -> np.ndarray:
    cx, cy, w, h = box.tolist()
    return np.array([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


@pytest.mark.parametrize(
    ("task", "options"),
    [("instance_segmentation", {}), ("referring_segmentation", {}), ("grounding", {"with_masks": True})],
)
def test_masks_travel_with_their_boxes_through_augmentation(
    synthetic: Path, processor: Any, task: str, options: dict
) -> None:
    spec = get_task(task)
    data = spec.load(spec.default_files(str(synthetic), "train"))
    collator = spec.make_collator(processor, data, train=True, seed=3, min_sizes=(48, 64), max_size=64, **options)
    records = [data.dataset[index] for index in range(8)]
    batch = collator(records)
    assert collator.stats["images_without_masks"] == 0
    sizes = set()
    for label, valid in zip(batch["labels"], batch["pixel_mask"]):
        height, width = int(valid.any(1).sum()), int(valid.any(0).sum())
        sizes.add(height)
        masks = label["masks"].numpy()
        assert masks.shape == (len(label["boxes"]), height, width) and masks.dtype == bool
        for box, mask in zip(label["boxes"], masks):
            # a visible part of an occluded shape may be smaller than its box, never larger
            found, expected = _mask_box(mask), _pixel_box(box, height, width)
            assert (found[:2] >= expected[:2] - 1.0).all() and (found[2:] <= expected[2:] + 1.0).all()
    assert sizes == {48, 64}  # both scales drawn, so the masks were resized


def test_masks_flip_with_the_image(processor: Any) -> None:
    spec = get_task("instance_segmentation")
    image = np.full((32, 48, 3), 90, dtype=np.uint8)
    image[8:24, 4:12] = (230, 20, 20)
    mask = np.zeros((32, 48), dtype=np.uint8)
    mask[8:24, 4:12] = 1
    record = {
        "image": Image.fromarray(image), "image_id": 1, "width": 48, "height": 32,
        "objects": {"bbox": [[4.0, 8.0, 8.0, 16.0]], "category_id": [3], "iscrowd": [0], "mask": [encode_mask(mask)]},
    }  # fmt: skip
    data = type("Data", (), {"categories": [{"id": 3, "name": "red square"}]})()
    collator = spec.make_collator(processor, data, train=True, min_sizes=(32,), max_size=48, flip_prob=1.0)
    labels = collator([record])["labels"][0]
    flipped = np.zeros((32, 48), dtype=bool)
    flipped[8:24, 36:44] = True
    assert (labels["masks"][0].numpy() == flipped).all()
    np.testing.assert_allclose(_pixel_box(labels["boxes"][0], 32, 48), [36, 8, 44, 24], atol=1e-4)


def test_instance_segmentation_scores_the_ground_truth_perfectly(synthetic: Path) -> None:
    spec = get_task("instance_segmentation")
    data = spec.load(spec.default_files(str(synthetic), "val"))
    predictions = []
    for record in data.dataset:
        objects = record["objects"]
        predictions.append(
            {
                "image_id": record["image_id"],
                "boxes": [[x, y, x + w, y + h] for x, y, w, h in objects["bbox"]],
                "scores": [1.0] * len(objects["bbox"]),
                "labels": objects["category_id"],
                "masks": objects["mask"],
            }
        )
    metrics = spec.score(spec.load_metric(), predictions, data)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    # a mask cut in half (same box) loses AP at IoU 0.5:0.95 but not its boxes: the score is the masks'
    halved = []
    for prediction in predictions:
        masks = []
        for rle in prediction["masks"]:
            mask = decode_rle(rle).astype(bool)
            rows = np.nonzero(mask.any(1))[0]
            mask[rows[len(rows) // 2] :] = False
            masks.append(encode_mask(mask))
        halved.append({**prediction, "masks": masks})
    assert spec.score(spec.load_metric(), halved, data)["AP"] < 0.5


def test_predictions_are_rles_at_the_original_size(synthetic: Path, processor: Any) -> None:
    from glipv2 import Glipv2ForInstanceSegmentation

    torch.manual_seed(0)
    model = Glipv2ForInstanceSegmentation(tiny_config(use_mask_head=True, mask_candidates=5)).eval()
    spec = get_task("instance_segmentation")
    data = spec.load(spec.default_files(str(synthetic), "val"))
    with torch.no_grad():
        predictions = spec.predict(model, processor, [data.dataset[0]], data, PredictOptions(threshold=0.0))
    (prediction,) = predictions
    categories = len(data.categories)
    assert 0 < len(prediction["masks"]) == len(prediction["boxes"]) <= 5 * categories  # candidates per chunk
    assert all(rle["size"] == [64, 64] and isinstance(rle["counts"], str) for rle in prediction["masks"])

    spec = get_task("referring_segmentation")
    data = spec.load(spec.default_files(str(synthetic), "val"))
    records = [data.dataset[index] for index in range(3)]
    with torch.no_grad():
        predictions = spec.predict(model, processor, records, data, PredictOptions())
    for record, prediction in zip(records, predictions):
        assert prediction["mask"]["size"] == [64, 64]
        assert prediction["reference"] == record["objects"]["mask"][0]  # one referred object per expression
    perfect = [{**prediction, "mask": prediction["reference"]} for prediction in predictions]
    metrics = spec.score(spec.load_metric(), perfect, data)
    assert metrics["mIoU"] == 1.0 and metrics["cIoU"] == 1.0 and metrics["precision@0.9"] == 1.0


def test_a_referring_record_without_masks_is_named(synthetic: Path) -> None:
    from tasks.referring_segmentation.task import reference_mask

    record = {"image_id": 12, "caption": "the red square", "objects": {"mask": [{"size": [0, 0], "counts": ""}]}}
    with pytest.raises(ValueError, match=r"image id=12 \('the red square'\): no object has a mask.*segmentation_file"):
        reference_mask(record)


def test_the_report_draws_masks() -> None:
    from tasks.visualize import MIN_SIDE, draw_detections

    image = Image.new("RGB", (MIN_SIDE, MIN_SIDE), (0, 0, 0))
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (100, 100, 200, 200))
    drawn = np.asarray(draw_detections(image, [{"label": "square", "score": 0.9, "mask": mask}]))
    assert drawn[150, 150].sum() > 0 and drawn[300, 300].sum() == 0  # tinted inside, untouched outside
    assert drawn[100:200, 100:200].reshape(-1, 3).any(axis=1).all()


def test_the_card_lists_mask_ap_and_the_segmentation_classes(tmp_path: Path, processor: Any) -> None:
    import yaml

    from glipv2 import Glipv2ForPreTraining
    from tasks.publish import write_model_card

    Glipv2ForPreTraining(tiny_config(use_mask_head=True)).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    metrics = {"instance_segmentation": {"AP": 0.71, "AP50": 0.93}, "referring_segmentation": {"mIoU": 0.84}}
    card = write_model_card(tmp_path, metrics).read_text()
    front = yaml.safe_load(card.split("---")[1])
    values = {
        (result["task"]["type"], result["task"]["name"], metric["type"]): metric["value"]
        for result in front["model-index"][0]["results"]
        for metric in result["metrics"]
    }
    assert values == {
        ("image-segmentation", "Instance Segmentation (mask AP)", "AP"): 0.71,
        ("image-segmentation", "Instance Segmentation (mask AP)", "AP50"): 0.93,
        ("image-segmentation", "Referring Segmentation", "mIoU"): 0.84,
    }
    assert 'pipeline("instance-segmentation", model=' in card and 'pipeline("referring-segmentation", model=' in card


def test_phrasecut_files_load_and_score_as_the_official_evaluation(tmp_path: Path) -> None:
    from tasks.grounding import phrasecut_files
    from tasks.referring_segmentation.task import reference_mask
    from tasks.spec import DataFiles
    from tests.tasks.test_segmentation_data import phrasecut_dir

    files = phrasecut_files(phrasecut_dir(tmp_path), "miniv")
    spec = get_task("referring_segmentation")
    data = spec.load(DataFiles(files["image_dir"], files["refer_file"]))
    assert data.dataset["caption"] == ["white plate", "people on the right", "dog"]
    references = [reference_mask(record) for record in data.dataset]
    assert references == data.dataset["gt_mask"]  # the union of every instance's polygons, as PhraseCut draws it
    predictions = [{"mask": rle, "reference": rle} for rle in references]
    metrics = spec.score(spec.load_metric(), predictions, data)
    assert metrics["mIoU"] == 1.0 and metrics["cIoU"] == 1.0


def test_masks_without_a_mask_head_are_refused(synthetic: Path, processor: Any) -> None:
    from glipv2 import Glipv2ForGrounding, Glipv2ForPreTraining

    spec = get_task("grounding")
    data = spec.load(spec.default_files(str(synthetic), "train"))
    batch = spec.make_collator(processor, data, with_masks=True)([data.dataset[0]])
    assert "masks" in batch["labels"][0]
    for model in (Glipv2ForGrounding(tiny_config()), Glipv2ForPreTraining(tiny_config())):
        with pytest.raises(ValueError, match=f"labels carry masks but this {type(model).__name__} has no mask head"):
            model(**batch)


def test_an_expression_past_the_text_limit_is_cut_not_fatal(synthetic: Path, processor: Any) -> None:
    from glipv2 import Glipv2ForInstanceSegmentation
    from tasks.referring_segmentation.task import segment_expressions

    model = Glipv2ForInstanceSegmentation(tiny_config(use_mask_head=True, max_text_length=8)).eval()
    spec = get_task("referring_segmentation")
    record = dict(spec.load(spec.default_files(str(synthetic), "val")).dataset[0])
    caption = "the red square that sits just left of the big blue circle near the top"
    record = {**record, "caption": caption, "objects": {**record["objects"], "tokens_positive": [[[0, len(caption)]]]}}
    with torch.no_grad():
        (result,) = segment_expressions(model, processor, [record])
    assert result["mask"].shape == (64, 64)
