"""Detection and phrase grounding: a tiny model overfits one synthetic image, then every inference path is checked
against it (stock pipelines, closed vocabulary, chunked large vocabularies, batches, phrase grounding)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou
from transformers import pipeline

from glipv2 import (
    Glipv2ForGrounding,
    Glipv2ForObjectDetection,
    Glipv2Processor,
    Glipv2Prompt,
    detect_labels,
)
from glipv2.loss import atss_assign, centerness_targets
from glipv2.pipelines_glipv2 import Glipv2TextCache
from tests.conftest import bert_processor, tiny_config

LABELS = ["red square", "blue circle"]
GT_BOXES = torch.tensor([[30.0, 40.0, 81.0, 101.0], [90.0, 10.0, 121.0, 41.0]])  # continuous xyxy pixels
STEPS = 150


def _scene(seed: int = 0) -> Image.Image:
    image = Image.new("RGB", (128, 128), (40, 40, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle([30, 40, 80, 100], fill=(220, 30, 30))  # PIL's rectangle includes x2, y2: [30, 81) x [40, 101)
    draw.ellipse([90, 10, 120, 40], fill=(30, 30, 220))
    return image


def _processor() -> Glipv2Processor:
    return bert_processor(128)


def _targets(processor: Glipv2Processor, labels: list[str]) -> list[dict]:
    prompt = processor.build_prompt(labels)
    spans = [[prompt.label_spans[labels.index(name)]] for name in LABELS]
    return [{"boxes": GT_BOXES.tolist(), "spans": spans}]


def _centerness_floor(model: Glipv2ForGrounding, inputs: dict, labels: list[dict]) -> float:
    """The lowest centerness BCE reachable: the entropy of the centerness targets of the ATSS positives."""
    with torch.no_grad():
        out = model(**inputs)
    anchors = model.anchors(out.spatial_shapes)
    per_level = (out.spatial_shapes[:, 0] * out.spatial_shapes[:, 1]).tolist()
    height, width = out.image_sizes[0].tolist()
    boxes = labels[0]["boxes"]
    xyxy = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], dim=1)
    pixels = xyxy * torch.tensor([width, height, width, height]) - torch.tensor([0.0, 0.0, 1.0, 1.0])
    matched = atss_assign(anchors, per_level, pixels, 9)
    positive = matched >= 0
    coder = model.box_coder
    target = coder.decode(coder.encode(pixels[matched[positive]], anchors[positive]), anchors[positive])
    t = centerness_targets(target, anchors[positive])
    entropy = -(t * t.clamp_min(1e-12).log() + (1 - t) * (1 - t).clamp_min(1e-12).log())
    return float(entropy.sum() / positive.sum())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Trains a tiny-random Glipv2ForGrounding on one synthetic image; saves it with its processor."""
    torch.manual_seed(0)
    processor = _processor()
    encoding = processor(images=_scene(), text=[LABELS], grounding_targets=_targets(processor, LABELS))
    inputs = {k: v for k, v in encoding.items() if k != "labels"}
    model = Glipv2ForGrounding(tiny_config(fusion_attention_dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(STEPS):
        model.train()
        out = model(**inputs, labels=encoding["labels"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append({"loss": out.loss.item(), **{k: v.item() for k, v in out.loss_dict.items()}})
    model.eval()
    folder = tmp_path_factory.mktemp("grounding") / "tiny-grounding"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    floor = _centerness_floor(model, inputs, encoding["labels"])
    return {
        "model": model,
        "processor": processor,
        "folder": folder,
        "history": history,
        "inputs": inputs,
        "centerness_floor": floor,
    }


def _best_box(result: dict, label: int) -> tuple[torch.Tensor, float]:
    mine = result["labels"] == label
    assert mine.any(), f"label {label} not detected"
    return result["boxes"][mine][0], float(result["scores"][mine][0])


def test_tiny_model_overfits_one_image(trained: dict) -> None:
    first, last = trained["history"][0], trained["history"][-1]
    print(f"loss {first['loss']:.3f} -> {last['loss']:.3f}; centerness floor {trained['centerness_floor']:.3f}")
    assert last["loss_cls"] <= 0.1 * first["loss_cls"]
    assert last["loss_box"] <= 0.1 * first["loss_box"]
    # BCE against soft centerness targets cannot go below their entropy: measure the fall of the reducible part.
    floor = 1.0 * trained["centerness_floor"]
    assert last["loss_centerness"] >= floor - 1e-4
    assert (last["loss"] - floor) <= 0.1 * (first["loss"] - floor)
    with torch.no_grad():
        out = trained["model"](**trained["inputs"])
    result = trained["processor"].post_process_grounded_object_detection(
        out, target_sizes=[(128, 128)], text_labels=[LABELS]
    )[0]
    assert result["labels"][:2].sort().values.tolist() == [0, 1]
    for label in range(2):
        box, score = _best_box(result, label)
        assert box_iou(box[None], GT_BOXES[label][None]).item() >= 0.9
        assert 0.5 < score <= 1.0
    assert result["text_labels"][0] in LABELS


def test_batch_equals_singles(trained: dict) -> None:
    model, processor = trained["model"], trained["processor"]
    images = [_scene(), _scene().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    label_lists = [LABELS, ["blue circle", "green star", "red square"]]  # different lengths: text padding
    batch = processor(images=images, text=label_lists)
    with torch.no_grad():
        together = processor.post_process_grounded_object_detection(
            model(**batch), target_sizes=[(128, 128)] * 2, text_labels=label_lists
        )
    for index, (image, labels) in enumerate(zip(images, label_lists)):
        single = processor(images=image, text=[labels])
        with torch.no_grad():
            alone = processor.post_process_grounded_object_detection(
                model(**single), target_sizes=[(128, 128)], text_labels=[labels]
            )[0]
        assert together[index]["labels"].tolist() == alone["labels"].tolist()
        torch.testing.assert_close(together[index]["scores"], alone["scores"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(together[index]["boxes"], alone["boxes"], rtol=1e-5, atol=1e-4)


def test_stock_zero_shot_pipeline(trained: dict) -> None:
    """transformers' pipeline runs one forward pass per label; its results must be our model's own detections."""
    detector = pipeline("zero-shot-object-detection", model=str(trained["folder"]))
    results = detector(_scene(), candidate_labels=LABELS, threshold=0.3)
    model, processor = trained["model"], trained["processor"]
    expected = []
    for label in LABELS:  # what the pipeline does: the label alone as the prompt
        inputs = processor(images=_scene(), text=label)
        with torch.no_grad():
            outputs = model(**inputs)
        found = processor.image_processor.post_process_object_detection(outputs, 0.3, [(128, 128)])[0]
        expected += [(float(s), label, [int(v) for v in b]) for s, b in zip(found["scores"], found["boxes"])]
    expected.sort(key=lambda item: -item[0])
    assert len(results) == len(expected) > 0
    for got, (score, label, box) in zip(results, expected):
        assert got["label"] == label and got["score"] == pytest.approx(score, abs=1e-5)
        assert [got["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] == box


def test_open_vocabulary_pipeline_equals_detect_labels(trained: dict) -> None:
    detector = pipeline("open-vocabulary-detection", model=str(trained["folder"]))
    results = detector(_scene(), candidate_labels=LABELS, threshold=0.3)
    direct = detect_labels(trained["model"], trained["processor"], _scene(), LABELS, threshold=0.3)[0]
    assert [r["label"] for r in results] == direct["text_labels"]
    assert [r["score"] for r in results] == pytest.approx(direct["scores"].tolist(), abs=1e-4)


def _label_iou(result: dict, label: int) -> float:
    box, _ = _best_box(result, label)
    return box_iou(box[None], GT_BOXES[LABELS.index(result["names"][label])][None]).item()


def test_large_vocabulary_chunks_backbone_once_text_cached(trained: dict) -> None:
    model, processor = trained["model"], trained["processor"]
    labels = [f"object number {i}" for i in range(1203)]
    labels[500], labels[1100] = "red square", "blue circle"
    calls = {"image": 0, "text": 0}
    encode_image, encode_text = model.model.encode_image, model.model.encode_text

    def count(name, fn):  # noqa: ANN001, ANN202
        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    model.model.encode_image, model.model.encode_text = count("image", encode_image), count("text", encode_text)
    try:
        cache = Glipv2TextCache()
        images = [_scene(), _scene()]
        results = detect_labels(model, processor, images, labels, threshold=0.05, max_detections=0, text_cache=cache)
        assert calls == {"image": 2, "text": 1}  # backbone once per image; all chunks encoded in one pass
        detect_labels(model, processor, images[:1], labels, threshold=0.05, text_cache=cache)
        assert calls == {"image": 3, "text": 1}  # text features reused
    finally:
        model.model.encode_image, model.model.encode_text = encode_image, encode_text
    num_chunks = len(processor.build_prompts(labels))
    assert num_chunks > 5
    for result in results:
        assert set(result["text_labels"]) <= set(labels)
        assert all(labels[i] == name for i, name in zip(result["labels"].tolist(), result["text_labels"]))
        for label_id, gt in ((500, GT_BOXES[0]), (1100, GT_BOXES[1])):
            box, _ = _best_box(result, label_id)
            assert box_iou(box[None], gt[None]).item() >= 0.9


def test_object_detection_closed_vocabulary_matches_grounding(trained: dict, tmp_path: Path) -> None:
    processor = trained["processor"]
    detector = Glipv2ForObjectDetection.from_pretrained(trained["folder"]).eval()
    detector.set_vocabulary(processor, LABELS)
    folder = tmp_path / "closed"
    detector.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)  # no tokenizer: the prompt lives in the config
    stock = pipeline("object-detection", model=str(folder), threshold=0.3)(_scene())
    direct = detect_labels(trained["model"], processor, _scene(), LABELS, threshold=0.3)[0]
    assert [r["label"] for r in stock] == direct["text_labels"]
    assert [r["score"] for r in stock] == pytest.approx(direct["scores"].tolist(), abs=1e-5)


def test_given_prompts_run_instead_of_the_processors(trained: dict) -> None:
    """`detect_labels(..., prompts=...)` runs exactly the given prompts, the labels' indices taken from their
    `label_ids`; prompts that do not index the labels once each are refused."""
    model, processor = trained["model"], trained["processor"]
    text, spans = "red square. blue circle", [(0, 10), (12, 23)]
    plain = detect_labels(model, processor, _scene(), LABELS, threshold=0.3)[0]
    given = detect_labels(
        model, processor, _scene(), LABELS, threshold=0.3, prompts=[Glipv2Prompt(text, spans, [0, 1])]
    )[0]
    for key in ("scores", "boxes", "labels"):
        torch.testing.assert_close(given[key], plain[key])
    # the same text with the label ids swapped: what the model finds for "red square" is reported as label 1
    swapped = detect_labels(
        model, processor, _scene(), LABELS, threshold=0.3, prompts=[Glipv2Prompt(text, spans, [1, 0])]
    )[0]
    torch.testing.assert_close(_best_box(swapped, 1)[0], _best_box(plain, 0)[0])
    with pytest.raises(ValueError, match="do not index 2 labels once each"):
        detect_labels(model, processor, _scene(), LABELS, prompts=[Glipv2Prompt(text, spans[:1], [2])])


def test_object_detection_with_several_prompt_chunks(trained: dict) -> None:
    processor = trained["processor"]
    labels = ["green star", "red square", "yellow triangle", "blue circle", "purple moon"]
    detector = Glipv2ForObjectDetection.from_pretrained(trained["folder"], max_text_length=12).eval()
    detector.set_vocabulary(processor, labels)
    assert len(detector.config.detection_prompts) >= 2
    inputs = processor.image_processor(_scene())
    with torch.no_grad():
        outputs = detector(**inputs)
    assert outputs.pred_boxes.dim() == 4  # (B, K, A, 4): one box set per chunk
    ours = processor.image_processor.post_process_object_detection(outputs, 0.3, [(128, 128)])[0]
    grounding = Glipv2ForGrounding.from_pretrained(trained["folder"], max_text_length=12).eval()
    direct = detect_labels(grounding, processor, _scene(), labels, threshold=0.3, text_cache=Glipv2TextCache())[0]
    assert ours["labels"].tolist() == direct["labels"].tolist()
    torch.testing.assert_close(ours["scores"], direct["scores"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours["boxes"], direct["boxes"], rtol=1e-4, atol=1e-3)


def test_phrase_grounding_pipeline(trained: dict) -> None:
    grounder = pipeline("phrase-grounding", model=str(trained["folder"]))
    caption = "red square. blue circle"
    by_phrase = grounder(_scene(), caption=caption, phrases=["red square", "blue circle"])
    by_span = grounder(_scene(), caption=caption, spans=[(0, 10), (12, 23)])
    assert by_phrase == by_span
    assert grounder(_scene(), caption, phrases=["red square", "blue circle"]) == by_phrase  # caption positionally
    for item, gt in zip(by_phrase, GT_BOXES):
        box = item["boxes"][0]["box"]
        found = torch.tensor([[box["xmin"], box["ymin"], box["xmax"], box["ymax"]]])
        assert box_iou(found, gt[None]).item() >= 0.9
    with pytest.raises(ValueError, match="does not occur in the caption"):
        grounder(_scene(), caption=caption, phrases=["green star"])
    with pytest.raises(ValueError, match="caption is empty"):
        grounder(_scene(), caption="  ", phrases=["x"])
    if not _spacy_model_available():
        with pytest.raises(ValueError, match="spaCy"):
            grounder(_scene(), caption=caption)


def _spacy_model_available() -> bool:
    try:
        import spacy

        spacy.load("en_core_web_sm")
        return True
    except (ImportError, OSError):
        return False


def test_bad_grounding_labels_raise(trained: dict) -> None:
    model, processor = trained["model"], trained["processor"]
    encoding = processor(images=_scene(), text=[LABELS])
    positive_map = torch.zeros(1, encoding["input_ids"].shape[1])
    positive_map[0, 1] = 1
    bad = [{"boxes": torch.tensor([[float("nan"), 0.5, 0.2, 0.2]]), "positive_map": positive_map}]
    with pytest.raises(ValueError, match="image 0.*box 0"):
        model(**encoding, labels=bad)
    with pytest.raises(ValueError, match="labels\\[0\\] must hold 'boxes'"):
        model(**encoding, labels=[{"boxes": torch.zeros(1, 4)}])
    with pytest.raises(ValueError, match="empty"):
        processor(images=_scene(), text=[""])
    with pytest.raises(ValueError, match="outside"):
        processor(
            images=_scene(),
            text=["red square"],
            grounding_targets=[{"boxes": [[200, 200, 250, 250]], "spans": [[(0, 10)]]}],
        )


def test_pseudo_label_round_trip(trained: dict, tmp_path: Path) -> None:
    """The overfit model as teacher: `scripts/pseudo_label.py` recovers both true boxes, the MDETR file it writes
    loads with the grounding loader, and its boxes equal the phrase-grounding pipeline's."""
    from scripts.pseudo_label import main as pseudo_label_main
    from tasks.common import read_json, write_json
    from tasks.grounding import load_mdetr_grounding

    (tmp_path / "images").mkdir()
    _scene().save(tmp_path / "images" / "scene.png")
    caption = "red square. blue circle"
    image = {"id": 7, "file_name": "scene.png", "width": 128, "height": 128}
    write_json(
        tmp_path / "captions.json",
        {"images": [image], "annotations": [{"id": 1, "image_id": 7, "caption": caption}]},
    )
    (tmp_path / "vocabulary.txt").write_text("Blue circle\nred square\ngreen star\n")
    spans = [[0, 10], [12, 23]]
    reference = {
        "images": [{**image, "caption": caption}],
        "annotations": [
            {"id": i + 1, "image_id": 7, "bbox": [x0, y0, x1 - x0, y1 - y0], "tokens_positive": [span]}
            for i, ((x0, y0, x1, y1), span) in enumerate(zip(GT_BOXES.tolist(), spans))
        ],
    }
    write_json(tmp_path / "reference.json", reference)
    output = tmp_path / "pseudo.json"
    pseudo_label_main(
        [
            "--teacher", str(trained["folder"]),
            "--captions", str(tmp_path / "captions.json"),
            "--image-dir", str(tmp_path / "images"),
            "--vocabulary", str(tmp_path / "vocabulary.txt"),
            "--reference", str(tmp_path / "reference.json"),
            "--threshold", "0.1",
            "--max-boxes-per-phrase", "1",
            "--output", str(output),
            "--device", "cpu",
        ]
    )  # fmt: skip
    labels = read_json(output)
    assert labels["info"]["recovery_at_iou_0.5"]["recall"] == 1.0
    assert labels["info"]["recovery_at_iou_0.5"]["precision"] == 1.0
    assert [a["tokens_positive"] for a in labels["annotations"]] == [[span] for span in spans]
    assert all(0.1 <= a["score"] <= 1.0 for a in labels["annotations"])

    record = load_mdetr_grounding(output, tmp_path / "images")[0]
    assert record["caption"] == caption and record["file_name"] == "scene.png"
    assert record["objects"]["tokens_positive"] == [[span] for span in spans]
    loaded = torch.tensor(record["objects"]["bbox"])
    written = torch.tensor([a["bbox"] for a in labels["annotations"]], dtype=loaded.dtype)
    torch.testing.assert_close(loaded, written)

    grounded = pipeline("phrase-grounding", model=str(trained["folder"]))(
        _scene(), caption=caption, spans=[tuple(s) for s in spans], threshold=0.1
    )
    for item, annotation in zip(grounded, labels["annotations"]):
        box = item["boxes"][0]["box"]
        x, y, w, h = annotation["bbox"]
        expected = [box["xmin"], box["ymin"], box["xmax"], box["ymax"]]
        assert [x, y, x + w, y + h] == pytest.approx(expected, abs=0.01)
        assert annotation["score"] == pytest.approx(item["boxes"][0]["score"], abs=1e-4)

    (tmp_path / "pairs.jsonl").write_text(json.dumps({"image": "images/scene.png", "text": caption}) + "\n")
    pseudo_label_main(
        [
            "--teacher", str(trained["folder"]),
            "--pairs", str(tmp_path / "pairs.jsonl"),
            "--vocabulary", str(tmp_path / "vocabulary.txt"),
            "--threshold", "0.1",
            "--max-boxes-per-phrase", "1",
            "--output", str(tmp_path / "from_pairs.json"),
        ]
    )  # fmt: skip
    from_pairs = read_json(tmp_path / "from_pairs.json")
    assert from_pairs["images"][0]["file_name"] == "images/scene.png"
    assert from_pairs["annotations"] == labels["annotations"]


@pytest.mark.parametrize("label", ["", "   ", "[SEP]", "[CLS]"])
def test_stock_zero_shot_pipeline_refuses_labels_without_words(trained: dict, label: str) -> None:
    """Before, the stock pipeline scored [SEP] as the label and returned 100 boxes labelled ''."""
    from transformers import pipeline

    detector = pipeline("zero-shot-object-detection", model=str(trained["folder"]))
    with pytest.raises(ValueError, match="no word between"):
        detector(_scene(), candidate_labels=[label], threshold=0.0)
    assert detector(_scene(), candidate_labels=["red square"], threshold=0.0)  # a real label still works
