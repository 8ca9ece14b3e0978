"""`--benchmark flickr30k`: MDETR's `final_flickr_separateGT_<split>.json` with `flickr30k-images/` and the original
Flickr30k Entities files (`Annotations/*.xml`, `Sentences/*.txt`, `<split>.txt`), scored as MDETR's FlickrEvaluator
(the evaluator GLIP runs): one entry per mention, Recall@1/5/10 and the upper bound, any-box and merged-box. The
recalls are checked against an independent re-implementation of that evaluator on the predictions file."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from scripts.evaluate_model import main
from tests.benchmark_fixtures import scene_image, write_image, write_json

SQUARE, CIRCLE = [30, 40, 81, 101], [90, 10, 121, 41]  # the scene's shapes, xyxy pixels as the XML writes them


def _placed(box: list[int], dx: int = 0, dy: int = 0, scale: float = 1.0) -> list[int]:
    return [
        round(box[0] * scale) + dx,
        round(box[1] * scale) + dy,
        round(box[2] * scale) + dx,
        round(box[3] * scale) + dy,
    ]


def _pictures() -> dict[str, tuple[Image.Image, dict]]:
    """Flickr30k image id -> (picture, placement of the scene in it)."""
    scene = scene_image()
    wide = Image.new("RGB", (256, 128), (40, 40, 40))
    wide.paste(scene, (128, 0))
    return {
        "1000092795": (scene, {}),
        "2000000001": (wide, {"dx": 128}),
        "3000000002": (scene.resize((192, 192)), {"scale": 1.5}),
        "4000000003": (scene.resize((96, 96)), {"scale": 0.75}),
    }


# Sentences/<id>.txt as distributed: "[/EN#<entity>/<type>[/<type>...] words]". Entity 1 is the square, 2 the circle,
# 3 both shapes (two boxes), 4 the background (a scene entity: no box), 5 not visual (no box).
SENTENCES = {
    "1000092795": [
        "[/EN#1/other A red square] sits below [/EN#2/other a blue circle] and [/EN#1/other it] is big .",
        "[/EN#3/other Two shapes] , [/EN#1/other/clothing a red square] and [/EN#2/other a blue circle] , on "
        "[/EN#4/scene a grey background] .",
        "[/EN#5/notvisual The picture] is simple .",
    ],
    "2000000001": [
        "[/EN#2/other A blue circle] is right of [/EN#1/other a red square] .",
        "[/EN#1/other The red square] is large and [/EN#2/other the blue circle] is small .",
    ],
    "3000000002": ["[/EN#1/other A red square] and [/EN#2/other a blue circle] ."],
    "4000000003": ["[/EN#1/other A red square] below [/EN#2/other a blue circle] and [/EN#3/other both shapes] ."],
}
SPLITS = {"val": ["1000092795", "2000000001", "3000000002"], "test": ["4000000003"]}


def _xml(image_id: str, picture: Image.Image, placement: dict) -> str:
    square, circle = _placed(SQUARE, **placement), _placed(CIRCLE, **placement)

    def box(names: list[str], xyxy: list[int]) -> str:
        values = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), xyxy))
        return "<object>" + "".join(f"<name>{n}</name>" for n in names) + f"<bndbox>{values}</bndbox></object>"

    return (
        f"<annotation><filename>{image_id}.jpg</filename><size><width>{picture.width}</width>"
        f"<height>{picture.height}</height><depth>3</depth></size>"
        + box(["1", "3"], square)
        + box(["2", "3"], circle)
        + "<object><name>4</name><nobndbox>0</nobndbox><scene>1</scene></object>"
        + "<object><name>5</name><nobndbox>1</nobndbox><scene>0</scene></object></annotation>"
    )


def _parse_sentence(line: str) -> tuple[str, list[dict]]:
    """The sentence text and its phrases with their character spans (independent of the project's parser)."""
    words, phrases = [], []
    for match in re.finditer(r"\[/EN#(\d+)((?:/\w+)*) ([^\]]*)\]|(\S+)", line):
        if match.group(4) is not None:
            words.append(match.group(4))
            continue
        text = match.group(3)
        begin = len(" ".join(words)) + (1 if words else 0)
        phrases.append({"entity": match.group(1), "types": match.group(2)[1:].split("/"), "text": text})
        phrases[-1]["span"] = [begin, begin + len(text)]
        words.extend(text.split())
    return " ".join(words), phrases


def _mdetr_json(split: str, pictures: dict) -> dict:
    """`final_flickr_separateGT_<split>.json` as MDETR's flickr_combined.py writes it: one entry per sentence
    (sizes as digit strings), `tokens_positive_eval` = the spans of the phrases whose entity has a box; one
    annotation per distinct box of the sentence, its `tokens_positive` the spans of every mention of every entity
    that has that box (the fixture's boxes are either identical or far apart)."""
    images, annotations = [], []
    for image_id in SPLITS[split]:
        picture, placement = pictures[image_id]
        boxes = {"1": [_placed(SQUARE, **placement)], "2": [_placed(CIRCLE, **placement)]}
        boxes["3"] = boxes["1"] + boxes["2"]
        for sentence_id, line in enumerate(SENTENCES[image_id]):
            caption, phrases = _parse_sentence(line)
            entry_id = len(images)
            images.append(
                {
                    "file_name": f"{image_id}.jpg",
                    "height": str(picture.height),
                    "width": str(picture.width),
                    "id": entry_id,
                    "caption": caption,
                    "dataset_name": "flickr",
                    "tokens_negative": [[0, len(caption)]],
                    "sentence_id": sentence_id,
                    "original_img_id": int(image_id),
                    "tokens_positive_eval": [[p["span"]] for p in phrases if p["entity"] in boxes],
                }
            )
            spans_of_box: dict[tuple, list] = {}
            for phrase in phrases:
                for xyxy in boxes.get(phrase["entity"], []):
                    spans_of_box.setdefault(tuple(xyxy), [])
            for phrase in phrases:
                for xyxy in boxes.get(phrase["entity"], []):
                    spans_of_box[tuple(xyxy)].append(phrase["span"])
            for (x0, y0, x1, y1), spans in spans_of_box.items():
                annotations.append(
                    {
                        "area": float((x1 - x0) * (y1 - y0)),
                        "iscrowd": 0,
                        "image_id": entry_id,
                        "category_id": 1,
                        "id": len(annotations),
                        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        "tokens_positive": spans,
                    }
                )
    categories = [{"supercategory": "object", "id": 1, "name": "object"}]
    return {"info": [], "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def flickr_root(root: Path, entities: bool = True) -> Path:
    pictures = _pictures()
    for image_id, (picture, _) in pictures.items():
        write_image(root / "flickr30k-images" / f"{image_id}.jpg", picture)
    for split in SPLITS:
        write_json(root / "mdetr_annotations" / f"final_flickr_separateGT_{split}.json", _mdetr_json(split, pictures))
    if entities:
        folder = root / "flickr30k_entities"
        (folder / "Annotations").mkdir(parents=True)
        (folder / "Sentences").mkdir()
        for image_id, (picture, placement) in pictures.items():
            (folder / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, picture, placement))
            (folder / "Sentences" / f"{image_id}.txt").write_text("\n".join(SENTENCES[image_id]) + "\n")
        for split, ids in SPLITS.items():
            (folder / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


# ------------------------------------------------------------------------------ the reference implementation
def _iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_recalls(entities: Path, split: str, predictions: list[dict], merged: bool) -> dict[str, float]:
    """MDETR's Flickr30kEntitiesRecallEvaluator, re-written: boxes from the XML, phrases from the sentences, one
    entry per phrase with a box; a prediction's k-th box list belongs to the k-th such phrase of its sentence."""
    phrases_of: dict[tuple[str, int], list[tuple[list, list[str]]]] = {}
    for image_id in (entities / f"{split}.txt").read_text().split():
        boxes: dict[str, list] = defaultdict(list)
        for obj in ElementTree.parse(entities / "Annotations" / f"{image_id}.xml").getroot().iter("object"):
            if obj.find("bndbox") is not None:
                xyxy = [float(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")]
                for name in obj.findall("name"):
                    boxes[name.text].append(xyxy)
        lines = [line for line in (entities / "Sentences" / f"{image_id}.txt").read_text().split("\n") if line]
        for index, line in enumerate(lines):
            found = [(boxes[p["entity"]], p["types"]) for p in _parse_sentence(line)[1] if p["entity"] in boxes]
            if found:
                phrases_of[(image_id, index)] = found
    hits: dict[str, list[float]] = defaultdict(list)
    for prediction in predictions:
        key = (str(prediction["image_id"]), prediction["sentence_id"])
        if key not in phrases_of:  # a sentence without a phrase that has a box: not evaluated
            continue
        assert len(prediction["boxes"]) == len(phrases_of[key])
        for predicted, (targets, types) in zip(prediction["boxes"], phrases_of[key]):
            if merged:
                targets = [
                    [min(t[0] for t in targets), min(t[1] for t in targets)]
                    + [max(t[2] for t in targets), max(t[3] for t in targets)]
                ]
            ious = [max(_iou(box, target) for target in targets) for box in predicted] or [0.0]
            for name, best in (
                ("recall@1", max(ious[:1])),
                ("recall@5", max(ious[:5])),
                ("recall@10", max(ious[:10])),
                ("upper_bound", max(ious)),
            ):
                for group in ["", *(f"/{t}" for t in types)]:
                    hits[f"{name}{group}"].append(float(best >= 0.5))
    return {name: sum(values) / len(values) for name, values in hits.items()}


# ------------------------------------------------------------------------------------------------- end to end
def _run(model: Path, root: Path, out: Path, *extra: str) -> dict:
    argv = ["--model", str(model), "--benchmark", "flickr30k", "--root", str(root), "--output-dir", str(out)]
    assert main([*argv, "--cpu", "--batch-size", "4", *extra]) == 0
    split = extra[extra.index("--split") + 1] if "--split" in extra else "val"
    return json.loads((out / f"flickr30k_{split}_metrics.json").read_text())


def test_val_recalls_equal_the_official_evaluator(scene_detector: Path, tmp_path: Path) -> None:
    root, out = flickr_root(tmp_path / "flickr"), tmp_path / "out"
    summary = _run(scene_detector, root, out)
    assert summary["benchmark"] == "flickr30k" and summary["split"] == "val" and summary["partial"] is False
    assert summary["num_samples"] == 6  # every sentence, the one without a boxed phrase included
    metrics = summary["metrics"]
    assert metrics["ground_truth"] == "flickr30k_entities"
    assert metrics["num_mentions"] == 12  # "A red square ... it": two entries; the scene and not-visual ones: none
    predictions = json.loads((out / "flickr30k_val_glipv2_predictions.json").read_text())
    assert predictions[0]["phrases"] == ["A red square", "a blue circle", "it"]
    assert [len(p["boxes"]) for p in predictions] == [3, 3, 0, 2, 2, 2]
    assert all(len(boxes) <= 100 for p in predictions for boxes in p["boxes"])
    entities = root / "flickr30k_entities"
    for merged, prefix in ((False, ""), (True, "merged_box/")):
        reference = reference_recalls(entities, "val", predictions, merged)
        for name, value in reference.items():
            assert metrics[f"{prefix}{name}"] == pytest.approx(value, abs=1e-12), f"{prefix}{name}"
    assert set(reference) >= {"recall@1/other", "recall@1/clothing"}  # per phrase type, from the sentences
    assert 0.3 < metrics["recall@1"] < 1.0  # the scene model finds most shapes: a real comparison


def test_test_split_from_the_mdetr_file_alone(scene_detector: Path, tmp_path: Path) -> None:
    root, out = flickr_root(tmp_path / "flickr", entities=False), tmp_path / "out"
    summary = _run(scene_detector, root, out, "--split", "test")
    metrics = summary["metrics"]
    assert metrics["ground_truth"] == "mdetr_annotations" and metrics["num_mentions"] == 3
    assert all("/" not in name.removeprefix("merged_box/") for name in metrics)  # no phrase types
    predictions = json.loads((out / "flickr30k_test_glipv2_predictions.json").read_text())
    assert [(p["image_id"], p["sentence_id"], p["phrases"]) for p in predictions] == [
        (4000000003, 0, ["A red square", "a blue circle", "both shapes"])
    ]
    entities = flickr_root(tmp_path / "official") / "flickr30k_entities"
    for merged, prefix in ((False, ""), (True, "merged_box/")):
        for name, value in reference_recalls(entities, "test", predictions, merged).items():
            if "/" not in name:
                assert metrics[f"{prefix}{name}"] == pytest.approx(value, abs=1e-12), f"{prefix}{name}"
    assert metrics["recall@1"] > 0


def test_partial_run_scores_the_sentences_it_predicted(scene_detector: Path, tmp_path: Path) -> None:
    root, out = flickr_root(tmp_path / "flickr"), tmp_path / "out"
    summary = _run(scene_detector, root, out, "--max-samples", "2")
    assert summary["partial"] is True and summary["num_samples"] == 2 and summary["metrics"]["num_mentions"] == 6
    predictions = json.loads((out / "flickr30k_val_glipv2_predictions.json").read_text())
    reference = reference_recalls(root / "flickr30k_entities", "val", predictions, merged=False)
    assert summary["metrics"]["recall@1"] == pytest.approx(reference["recall@1"], abs=1e-12)


# ----------------------------------------------------------------------------------------- scoring by hand
def _hand_predictions() -> list[dict]:
    """Every mention gets the square of its image, except "it" (no box) and the last circle (found third)."""
    pictures, predictions = _pictures(), []
    far = [0.0, 0.0, 5.0, 5.0]
    for image_id in SPLITS["val"]:
        square = [float(v) for v in _placed(SQUARE, **pictures[image_id][1])]
        circle = [float(v) for v in _placed(CIRCLE, **pictures[image_id][1])]
        for sentence_id, line in enumerate(SENTENCES[image_id]):
            texts = [p["text"] for p in _parse_sentence(line)[1] if p["entity"] in {"1", "2", "3"}]
            boxes = [[] if text == "it" else [square] for text in texts]
            if image_id == "3000000002":
                boxes[1] = [far, far, circle]
            predictions.append(
                {"image_id": int(image_id), "sentence_id": sentence_id, "boxes": boxes, "phrases": texts}
            )
    return predictions


def _entity_files(root: Path) -> tuple[str, str, str]:
    folder = root / "flickr30k_entities"
    return str(folder / "Annotations"), str(folder / "Sentences"), str(folder / "val.txt")


def test_recalls_by_hand(tmp_path: Path) -> None:
    import evaluate

    from tasks.grounding.benchmarks import flickr_recalls, official_mentions
    from tasks.spec import METRICS_DIR

    root = flickr_root(tmp_path / "flickr")
    predictions = _hand_predictions()
    boxes, references, types = official_mentions(predictions, _entity_files(root), "final.json", complete=True)
    metrics = flickr_recalls(evaluate.load(f"{METRICS_DIR}/grounding_recall"), boxes, references, types)
    # 12 mentions. Rank 1 hits: the five square mentions other than "it", and "Two shapes" (its square is one of
    # its two boxes). The scaled circle is found third. Merged, "Two shapes" has the box [30, 10, 121, 101]: the
    # square's IoU with it is 51 * 61 / (91 * 91) = 0.376, a miss.
    assert metrics["num_mentions"] == 12
    assert metrics["recall@1"] == 6 / 12 and metrics["recall@5"] == metrics["recall@10"] == 7 / 12
    assert metrics["upper_bound"] == 7 / 12
    assert metrics["merged_box/recall@1"] == 5 / 12 and metrics["merged_box/recall@5"] == 6 / 12
    assert metrics["recall@1/clothing"] == 1.0 and metrics["recall@1/other"] == 6 / 12
    entities = root / "flickr30k_entities"
    for merged, prefix in ((False, ""), (True, "merged_box/")):
        for name, value in reference_recalls(entities, "val", predictions, merged).items():
            assert metrics[f"{prefix}{name}"] == pytest.approx(value, abs=1e-12), f"{prefix}{name}"


# -------------------------------------------------------------------------------------------- bad input
def test_malformed_entity_files_are_named(tmp_path: Path) -> None:
    from tasks.common import Glipv2DataError
    from tasks.grounding.benchmarks import official_mentions

    root = flickr_root(tmp_path / "flickr")
    files, predictions = _entity_files(root), _hand_predictions()
    xml = Path(files[0]) / "2000000001.xml"
    xml.write_text(xml.read_text().replace("<xmin>158</xmin>", "<xmin>15B</xmin>", 1))
    with pytest.raises(Glipv2DataError, match=r"2000000001\.xml: object 0 \(name 1, 3\): field 'bndbox/xmin'"):
        official_mentions(predictions, files, "final.json", complete=True)
    xml.write_text(xml.read_text().replace("15B", "158"))
    sentences = Path(files[1]) / "3000000002.txt"
    sentences.write_text("[/EN#1/other A red square] and [/EN#2/other a blue circle .\n")
    with pytest.raises(
        Glipv2DataError, match=r"3000000002\.txt: sentence 0: field 'phrase': phrase 1 is never closed"
    ):
        official_mentions(predictions, files, "final.json", complete=True)
    sentences.write_text("[/EN#1/other A red square] and [EN#2/other a blue circle] .\n")
    with pytest.raises(Glipv2DataError, match=r"3000000002\.txt: sentence 0: field 'phrase': expected a '\[/EN#"):
        official_mentions(predictions, files, "final.json", complete=True)
    sentences.write_text(SENTENCES["3000000002"][0] + "\n")

    record = r"final\.json: original_img_id=1000092795 sentence_id=0: field 'tokens_positive_eval'"
    fewer = [dict(p, boxes=p["boxes"][:2]) if i == 0 else p for i, p in enumerate(predictions)]
    with pytest.raises(Glipv2DataError, match=record + r": 2 mentions where .*1000092795\.txt evaluates 3"):
        official_mentions(fewer, files, "final.json", complete=True)
    renamed = [
        dict(p, phrases=["A red square", "a blue circle", "he"]) if i == 0 else p for i, p in enumerate(predictions)
    ]
    with pytest.raises(Glipv2DataError, match=record + r": mention 2 is 'he' where the .* sentence has 'it'"):
        official_mentions(renamed, files, "final.json", complete=True)
    with pytest.raises(Glipv2DataError, match=r"sentence_id=1: field 'sentence_id': 1 sentences .* have no entry"):
        official_mentions(predictions[:1] + predictions[2:], files, "final.json", complete=True)
    official_mentions(predictions[:1], files, "final.json", complete=False)  # a partial run scores what it has
    stranger = [dict(predictions[0], image_id=4000000003)]
    with pytest.raises(Glipv2DataError, match=r"field 'original_img_id': image 4000000003 is not in the split list"):
        official_mentions(stranger, files, "final.json", complete=False)


def test_missing_files_and_fields_are_named(scene_detector: Path, tmp_path: Path) -> None:
    from tasks.common import Glipv2DataError

    root = flickr_root(tmp_path / "flickr")
    argv = ["--model", str(scene_detector), "--benchmark", "flickr30k", "--root", str(root), "--output-dir", "x"]
    (root / "flickr30k_entities" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"'flickr30k', split 'val': .* 'flickr30k_entities/val\.txt'"):
        main(argv)
    (root / "flickr30k_entities" / "val.txt").write_text("\n".join(SPLITS["val"]))
    path = root / "mdetr_annotations" / "final_flickr_separateGT_val.json"
    data = json.loads(path.read_text())
    del data["images"][4]["sentence_id"]
    path.write_text(json.dumps(data))
    with pytest.raises(Glipv2DataError, match=r"separateGT_val\.json: image id=4: field 'sentence_id': missing key"):
        main(argv)
    with pytest.raises(ValueError, match=r"no split 'testA'; its splits: \['val', 'test'\]"):
        main([*argv, "--split", "testA"])


def test_list_benchmarks_prints_the_official_files(capsys: pytest.CaptureFixture) -> None:
    assert main(["--list-benchmarks"]) == 0
    printed = capsys.readouterr().out
    assert "flickr30k (task grounding)" in printed
    assert (
        "  test: annotation_file=mdetr_annotations/final_flickr_separateGT_test.json, image_dir=flickr30k-images, "
        "entities_annotations_dir=flickr30k_entities/Annotations, entities_sentences_dir=flickr30k_entities/Sentences"
        ", entities_split_file=flickr30k_entities/test.txt"
    ) in printed
