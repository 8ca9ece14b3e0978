"""`--benchmark coco-captions`: Karpathy's `dataset_coco.json` and COCO's caption files exactly as distributed; the
metrics equal pycocoevalcap's own COCOEvalCap run on the written results file (SPICE, which downloads Stanford
CoreNLP on first use, is stubbed out of the reference and reported as not computed)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from scripts.evaluate_model import main
from tests.benchmark_fixtures import write_image, write_json
from tests.modeling_helpers import CAPTION_TEXT_CONFIG, answer_config, caption_batch, scene, train_steps

SCENES = {42: ("red", "square"), 73: ("blue", "circle"), 74: ("green", "square"), 133: ("red", "circle")}
REFERENCES = {
    42: ["a red square", "A red square on grey.", "red box in the middle"],
    73: ["a blue circle", "a blue disc on a grey background"],
    74: ["a green square", "Green square."],
    133: ["a red circle", "a red disc"],
}
SPLITS = {42: "test", 73: "test", 74: "val", 133: "train"}


@pytest.fixture(scope="module")
def captioner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny captioning model that learned the first reference of every scene."""
    from glipv2 import Glipv2ForConditionalGeneration
    from tests.conftest import bert_processor

    processor = bert_processor(64)
    torch.manual_seed(0)
    model = Glipv2ForConditionalGeneration(
        answer_config(fusion_attention_dropout=0.0, text_config=CAPTION_TEXT_CONFIG)
    )
    images = [scene(*SCENES[i]) for i in SCENES]
    batch = caption_batch(processor, [REFERENCES[i][0] for i in SCENES], images)
    pixel_values = batch.pop("pixel_values")
    with torch.no_grad():
        memory = model.image_memory(pixel_values)
    train_steps(model, lambda: model(**batch, image_memory=memory).loss, steps=60)
    folder = tmp_path_factory.mktemp("captioner")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _karpathy_root(root: Path) -> Path:
    images, sentence_id = [], 0
    for index, (cocoid, (color, shape)) in enumerate(SCENES.items()):
        name = f"COCO_val2014_{cocoid:012d}.jpg"
        write_image(root / "val2014" / name, scene(color, shape))
        sentences = []
        for raw in REFERENCES[cocoid]:
            tokens = raw.lower().rstrip(".").split()
            sentences.append({"tokens": tokens, "raw": raw, "imgid": index, "sentid": sentence_id})
            sentence_id += 1
        images.append(
            {
                "filepath": "val2014",
                "sentids": [s["sentid"] for s in sentences],
                "filename": name,
                "imgid": index,
                "split": SPLITS[cocoid],
                "sentences": sentences,
                "cocoid": cocoid,
            }
        )
    write_json(root / "dataset_coco.json", {"images": images, "dataset": "coco"})
    return root


def _coco_eval_cap(gt: dict, results_file: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """pycocoevalcap's COCOEvalCap over a COCO captions ground truth and a results file (SPICE stubbed)."""
    from pycocoevalcap import eval as eval_module
    from pycocotools.coco import COCO

    class NoSpice:
        def compute_score(self, gts: dict, res: dict) -> tuple[float, list]:
            return 0.0, []

        def method(self) -> str:
            return "SPICE"

    monkeypatch.setattr(eval_module, "Spice", NoSpice)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = eval_module.COCOEvalCap(coco, coco.loadRes(str(results_file)))
        evaluator.params["image_id"] = coco.getImgIds()
        evaluator.evaluate()
    return evaluator.eval


def _gt(image_ids: list[int]) -> dict:
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 64, "height": 64} for i in image_ids]
    annotations = [
        {"id": 1000 * i + k, "image_id": i, "caption": caption}
        for i in image_ids
        for k, caption in enumerate(REFERENCES[i])
    ]
    return {"info": {}, "licenses": [], "type": "captions", "images": images, "annotations": annotations}


def test_karpathy_test_equals_coco_eval_cap(captioner: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, out = _karpathy_root(tmp_path / "coco"), tmp_path / "out"
    argv = ["--model", str(captioner), "--benchmark", "coco-captions", "--root", str(root), "--output-dir", str(out)]
    assert main([*argv, "--cpu", "--max-caption-tokens", "8"]) == 0
    summary = json.loads((out / "coco-captions_karpathy-test_metrics.json").read_text())
    assert summary["split"] == "karpathy-test" and summary["num_samples"] == 2  # the two test images only
    results_file = out / "captions_karpathy-test_glipv2_results.json"
    results = json.loads(results_file.read_text())
    assert sorted(entry["image_id"] for entry in results) == [42, 73]
    assert {entry["caption"] for entry in results} == {"a red square", "a blue circle"}
    reference = _coco_eval_cap(_gt([42, 73]), results_file, monkeypatch)
    metrics = summary["metrics"]
    assert metrics["CIDEr"] > 1.0
    names = {"Bleu_1": "BLEU-1", "Bleu_2": "BLEU-2", "Bleu_3": "BLEU-3", "Bleu_4": "BLEU-4", "METEOR": "METEOR"}
    names.update({"ROUGE_L": "ROUGE-L", "CIDEr": "CIDEr"})
    for theirs, ours in names.items():
        assert metrics[ours] == pytest.approx(reference[theirs], abs=1e-9), ours
    assert "Stanford CoreNLP 3.6.0" in metrics["not_computed"]["SPICE"]


def test_val2014_and_the_test2014_server_file(captioner: Path, tmp_path: Path) -> None:
    root = _karpathy_root(tmp_path / "coco")
    write_json(root / "annotations" / "captions_val2014.json", _gt(list(SCENES)))
    info = _gt([42])
    del info["annotations"]
    info["images"][0]["file_name"] = "COCO_test2014_000000000042.jpg"
    write_image(root / "test2014" / "COCO_test2014_000000000042.jpg", scene("red"))
    write_json(root / "annotations" / "image_info_test2014.json", info)
    argv = ["--model", str(captioner), "--benchmark", "coco-captions", "--root", str(root), "--cpu"]
    assert main([*argv, "--split", "val2014", "--output-dir", str(tmp_path / "val")]) == 0
    summary = json.loads((tmp_path / "val" / "coco-captions_val2014_metrics.json").read_text())
    assert summary["num_samples"] == 4 and summary["metrics"]["CIDEr"] > 1.0
    assert main([*argv, "--split", "test2014", "--output-dir", str(tmp_path / "test")]) == 0
    summary = json.loads((tmp_path / "test" / "coco-captions_test2014_metrics.json").read_text())
    assert summary["metrics"] == {}
    results = json.loads((tmp_path / "test" / "captions_test2014_glipv2_results.json").read_text())
    assert results == [{"image_id": 42, "caption": "a red square"}]


def test_a_malformed_karpathy_file_names_the_record_and_field(captioner: Path, tmp_path: Path) -> None:
    from tasks.common import Glipv2DataError

    root = _karpathy_root(tmp_path / "coco")
    data = json.loads((root / "dataset_coco.json").read_text())
    del data["images"][1]["sentences"][0]["raw"]
    write_json(root / "dataset_coco.json", data)
    argv = ["--model", str(captioner), "--benchmark", "coco-captions", "--root", str(root), "--output-dir", "o"]
    with pytest.raises(Glipv2DataError) as error:
        main([*argv, "--cpu"])
    assert (error.value.record, error.value.field) == ("image id=73", "raw")
    assert error.value.file.endswith("dataset_coco.json")
