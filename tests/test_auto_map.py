"""Any saved folder is a complete Hub repository (`glipv2/auto_map.py`): plain `save_pretrained` and plain
`push_to_hub` of an all-heads checkpoint give every task class and every pipeline to a process where glipv2 cannot
be imported, with the outputs of the local classes and pipelines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from glipv2 import Glipv2ForPreTraining, Glipv2ForSegmentation
from glipv2.auto_map import PIPELINES, TASK_CLASSES
from tests.conftest import bert_processor, tiny_config

LABELS = ["red square", "blue circle"]
ANSWERS = ["red", "blue", "two"]
NO_DROPOUT = {"fusion_attention_dropout": 0.0, "id2label": dict(enumerate(ANSWERS)), "use_mask_head": True}

# Every Auto class of the folder's auto_map and every pipeline, run from the folder's own code.
REMOTE = textwrap.dedent(
    """
    import json, sys
    sys.modules["glipv2"] = None  # glipv2 cannot be imported: only the folder's own code may run
    import torch, transformers
    from PIL import Image
    from transformers import AutoConfig, AutoProcessor, pipeline

    folder, closed, image_path, inputs_path, out_path = sys.argv[1:6]
    image, inputs, out = Image.open(image_path), torch.load(inputs_path), {"classes": {}, "pipelines": {}}
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert type(config).__module__.startswith("transformers_modules")
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(processor).__module__.startswith("transformers_modules")
    with torch.no_grad():
        for name in config.auto_map:
            if name not in ("AutoConfig", "AutoModelForObjectDetection", "AutoModelForImageSegmentation"):
                model = getattr(transformers, name).from_pretrained(folder, trust_remote_code=True).eval()
                assert type(model).__module__.startswith("transformers_modules"), type(model)
                kwargs = inputs
                if name == "AutoModelForImageTextToText":  # captioning: the prompt is the caption's start
                    kwargs = {k: v for k, v in inputs.items() if k in ("pixel_values", "input_ids")}
                result = model(**kwargs)
                out["classes"][name] = {k: v for k, v in result.items() if isinstance(v, torch.Tensor)}
    labels = {"candidate_labels": %(labels)r, "threshold": 0.0}
    runs = {
        "open-vocabulary-detection": (folder, lambda p: p(image, max_detections=5, **labels)),
        "zero-shot-object-detection": (folder, lambda p: p(image, top_k=5, **labels)),
        "phrase-grounding": (folder, lambda p: p(image, "a red square and a blue circle",
                                                  phrases=["a red square", "a blue circle"], threshold=0.0)),
        "visual-question-answering": (folder, lambda p: p(image, "what colour is the square?", top_k=2)),
        "image-captioning": (folder, lambda p: p(image, max_new_tokens=4)),
        "zero-shot-image-classification": (folder, lambda p: p(image, candidate_labels=["a cat", "a dog"])),
        "instance-segmentation": (folder, lambda p: p(image, top_k=3, **labels)),
        "referring-segmentation": (folder, lambda p: p(image, "the red square", threshold=0.0)),
        "object-detection": (closed, lambda p: p(image, threshold=0.0)[:5]),
        "image-segmentation": (closed, lambda p: p(image, threshold=0.0)),
    }
    for task, (name, call) in runs.items():
        runner = pipeline(task, model=name, trust_remote_code=True)
        out["pipelines"][task] = call(runner)
    torch.save(out, out_path)
    """
) % {"labels": LABELS}


def _scene() -> Image.Image:
    image = Image.new("RGB", (80, 64), (40, 40, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle([8, 10, 36, 48], fill=(220, 30, 30))
    draw.ellipse([46, 6, 70, 30], fill=(30, 30, 220))
    return image


def _save(root: Path) -> tuple[Path, Path]:
    """An all-heads checkpoint and a closed-vocabulary detector, each saved with `save_pretrained` alone (model and
    processor, tokenizer included)."""
    processor = bert_processor(64)
    torch.manual_seed(0)
    Glipv2ForPreTraining(tiny_config(**NO_DROPOUT)).save_pretrained(root / "all")
    processor.save_pretrained(root / "all")
    detector = Glipv2ForSegmentation(tiny_config(**NO_DROPOUT))  # the closed-vocabulary detector, with masks
    detector.set_vocabulary(processor, LABELS)
    detector.save_pretrained(root / "closed")
    processor.save_pretrained(root / "closed")
    return root / "all", root / "closed"


def test_plain_save_writes_every_served_class_and_pipeline(tmp_path: Path) -> None:
    folder, closed = _save(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    served = {entry.auto_class: entry.reference for entry in TASK_CLASSES if not entry.requires}
    assert config["auto_map"] == {"AutoConfig": "configuration_glipv2.Glipv2Config", **served}
    expected = {pipe.task for pipe in PIPELINES} - {"object-detection", "image-segmentation"}  # no closed vocabulary
    assert set(config["custom_pipelines"]) == expected
    for reference in [*config["auto_map"].values(), *(p["impl"] for p in config["custom_pipelines"].values())]:
        assert (folder / f"{reference.split('.')[0]}.py").is_file(), reference
    closed_config = json.loads((closed / "config.json").read_text())
    assert closed_config["auto_map"]["AutoModelForObjectDetection"] == (
        "modeling_glipv2_detection.Glipv2ForObjectDetection"
    )
    assert closed_config["auto_map"]["AutoModelForImageSegmentation"] == (
        "modeling_glipv2_segmentation.Glipv2ForSegmentation"
    )
    assert {"object-detection", "image-segmentation"} <= set(closed_config["custom_pipelines"])
    # with glipv2 installed, the local classes and pipelines serve the folder without trust_remote_code
    from transformers import pipeline

    assert type(pipeline("phrase-grounding", model=str(folder))).__module__ == "glipv2.pipelines_glipv2"


def _local(folder: Path, closed: Path, image: Image.Image, inputs: dict) -> dict:
    import transformers
    from transformers import pipeline

    out = {"classes": {}, "pipelines": {}}
    config = json.loads((folder / "config.json").read_text())
    with torch.no_grad():
        for name in config["auto_map"]:
            if name not in ("AutoConfig", "AutoModelForObjectDetection", "AutoModelForImageSegmentation"):
                model = getattr(transformers, name).from_pretrained(folder).eval()
                kwargs = inputs
                if name == "AutoModelForImageTextToText":
                    kwargs = {k: v for k, v in inputs.items() if k in ("pixel_values", "input_ids")}
                result = model(**kwargs)
                out["classes"][name] = {k: v for k, v in result.items() if isinstance(v, torch.Tensor)}
    labels = {"candidate_labels": LABELS, "threshold": 0.0}
    out["pipelines"] = {
        "open-vocabulary-detection": pipeline("open-vocabulary-detection", model=str(folder))(
            image, max_detections=5, **labels
        ),
        "zero-shot-object-detection": pipeline("zero-shot-object-detection", model=str(folder))(
            image, top_k=5, **labels
        ),
        "phrase-grounding": pipeline("phrase-grounding", model=str(folder))(
            image, "a red square and a blue circle", phrases=["a red square", "a blue circle"], threshold=0.0
        ),
        "visual-question-answering": pipeline("visual-question-answering", model=str(folder))(
            image, "what colour is the square?", top_k=2
        ),
        "image-captioning": pipeline("image-captioning", model=str(folder))(image, max_new_tokens=4),
        "zero-shot-image-classification": pipeline("zero-shot-image-classification", model=str(folder))(
            image, candidate_labels=["a cat", "a dog"]
        ),
        "instance-segmentation": pipeline("instance-segmentation", model=str(folder))(image, top_k=3, **labels),
        "referring-segmentation": pipeline("referring-segmentation", model=str(folder))(
            image, "the red square", threshold=0.0
        ),
        "object-detection": pipeline("object-detection", model=str(closed))(image, threshold=0.0)[:5],
        "image-segmentation": pipeline("image-segmentation", model=str(closed))(image, threshold=0.0),
    }
    return out


def _assert_equal(remote: object, local: object, where: str = "") -> None:
    if isinstance(local, torch.Tensor):
        torch.testing.assert_close(remote, local, rtol=1e-5, atol=1e-5, msg=where)
    elif isinstance(local, dict):
        assert set(remote) == set(local), where
        for key in local:
            _assert_equal(remote[key], local[key], f"{where}.{key}")
    elif isinstance(local, (list, tuple)):
        assert len(remote) == len(local), where
        for index, (a, b) in enumerate(zip(remote, local)):
            _assert_equal(a, b, f"{where}[{index}]")
    elif isinstance(local, float):
        assert remote == pytest.approx(local, abs=1e-4), where
    else:
        assert remote == local, where


def _run_remote(folder: str, closed: str, tmp_path: Path, env_extra: dict[str, str]) -> tuple[dict, Image.Image, dict]:
    image = _scene()
    image.save(tmp_path / "scene.png")
    processor = bert_processor(64)
    inputs = dict(processor(images=image, text=["red square. blue circle"], return_tensors="pt"))
    inputs.pop("token_type_ids", None)
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "remote.py").write_text(REMOTE)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HOME": str(tmp_path / "hf"),
        "TOKENIZERS_PARALLELISM": "false",
        **env_extra,
    }
    args = [folder, closed, str(tmp_path / "scene.png"), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")]
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return torch.load(tmp_path / "out.pt", weights_only=False), image, inputs


def test_a_plainly_saved_folder_serves_every_class_and_pipeline_as_remote_code(tmp_path: Path) -> None:
    folder, closed = _save(tmp_path)
    remote, image, inputs = _run_remote(str(folder), str(closed), tmp_path, {"HF_HUB_OFFLINE": "1"})
    local = _local(folder, closed, image, inputs)
    assert set(remote["classes"]) == {e.auto_class for e in TASK_CLASSES if not e.requires}
    _assert_equal(remote, local)


# A model loaded as remote code and saved again with plain `save_pretrained`: the new folder serves its pipelines.
RESAVE = textwrap.dedent(
    """
    import json, sys
    sys.modules["glipv2"] = None  # glipv2 cannot be imported: only the folder's own code may run
    import torch, transformers
    from PIL import Image
    from transformers import AutoProcessor, pipeline

    folder, closed, out_path, *image_paths = sys.argv[1:]
    images = [Image.open(path) for path in image_paths]
    out = {"pipelines": {}, "custom_pipelines": {}}
    sources = ((folder, "AutoModelForInstanceSegmentation"), (closed, "AutoModelForImageSegmentation"))
    for source, auto_class in sources:
        model = getattr(transformers, auto_class).from_pretrained(source, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model)
        resaved = source + "-resaved"
        model.save_pretrained(resaved)
        AutoProcessor.from_pretrained(source, trust_remote_code=True).save_pretrained(resaved)
        config = json.load(open(resaved + "/config.json"))
        out["custom_pipelines"][auto_class] = sorted(config.get("custom_pipelines", {}))
    labels = {"candidate_labels": %(labels)r, "threshold": 0.0}
    with torch.no_grad():
        out["pipelines"]["instance-segmentation"] = pipeline(
            "instance-segmentation", model=folder + "-resaved", trust_remote_code=True
        )(images, top_k=3, **labels)
        out["pipelines"]["image-segmentation"] = [
            pipeline("image-segmentation", model=closed + "-resaved", trust_remote_code=True)(image, threshold=0.0)
            for image in images
        ]
    torch.save(out, out_path)
    """
) % {"labels": LABELS}


def test_a_remote_code_model_saved_again_keeps_its_pipelines(tmp_path: Path) -> None:
    """The reported failure: a model loaded with `trust_remote_code=True` (its copy of this package held only its
    modeling code) and saved with plain `save_pretrained` lost `custom_pipelines`, so `pipeline(...)` on the new
    folder was an unknown task. Images of two sizes; the outputs equal the local pipelines' on the first folder."""
    import transformers
    from transformers import pipeline

    folder, closed = _save(tmp_path)
    images = [_scene(), _scene().resize((64, 96))]
    for index, image in enumerate(images):
        image.save(tmp_path / f"scene{index}.png")
    (tmp_path / "resave.py").write_text(RESAVE)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    paths = [str(tmp_path / f"scene{index}.png") for index in range(len(images))]
    result = subprocess.run(
        [sys.executable, str(tmp_path / "resave.py"), str(folder), str(closed), str(tmp_path / "out.pt"), *paths],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    remote = torch.load(tmp_path / "out.pt", weights_only=False)
    # the same entries as a local save of the same class (glipv2 installed)
    for source, auto_class in (
        (folder, "AutoModelForInstanceSegmentation"),
        (closed, "AutoModelForImageSegmentation"),
    ):
        model = getattr(transformers, auto_class).from_pretrained(source)
        model.save_pretrained(tmp_path / f"{auto_class}-local")
        config = json.loads((tmp_path / f"{auto_class}-local" / "config.json").read_text())
        assert remote["custom_pipelines"][auto_class] == sorted(config["custom_pipelines"]), auto_class
    assert "instance-segmentation" in remote["custom_pipelines"]["AutoModelForInstanceSegmentation"]
    assert "image-segmentation" in remote["custom_pipelines"]["AutoModelForImageSegmentation"]
    images = [Image.open(path) for path in paths]
    labels = {"candidate_labels": LABELS, "threshold": 0.0}
    with torch.no_grad():
        local = {
            "instance-segmentation": pipeline("instance-segmentation", model=str(folder))(images, top_k=3, **labels),
            "image-segmentation": [
                pipeline("image-segmentation", model=str(closed))(image, threshold=0.0) for image in images
            ],
        }
    _assert_equal(remote["pipelines"], local)


PUSH = textwrap.dedent(
    """
    import sys
    from glipv2 import Glipv2ForPreTraining, Glipv2ForSegmentation, Glipv2Processor
    all_heads, closed, repo = sys.argv[1:4]
    pairs = ((all_heads, Glipv2ForPreTraining, repo), (closed, Glipv2ForSegmentation, repo + "-closed"))
    for folder, cls, name in pairs:
        cls.from_pretrained(folder).push_to_hub(name)
        Glipv2Processor.from_pretrained(folder).push_to_hub(name)
    """
)


def test_a_plain_push_to_hub_serves_every_class_and_pipeline_as_remote_code(tmp_path: Path) -> None:
    """The reported failure: `push_to_hub` of a pre-training checkpoint, then `AutoModelForZeroShotObjectDetection`
    and the `open-vocabulary-detection` pipeline where glipv2 is not installed."""
    from tests.hub_server import HubServer

    folder, closed = _save(tmp_path)
    token = "hf_glipv2AutoMapTestToken0123456789abcdef"
    server = HubServer(tokens={token: "alice"}).start()
    try:
        hub = {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": token, "HF_HUB_OFFLINE": "0"}
        env = {**os.environ, **hub, "HF_HOME": str(tmp_path / "pusher")}
        (tmp_path / "push.py").write_text(PUSH)
        pushed = subprocess.run(
            [sys.executable, str(tmp_path / "push.py"), str(folder), str(closed), "alice/all-heads"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert pushed.returncode == 0, pushed.stderr[-4000:]
        files = server.state.repos["alice/all-heads"].commits[server.state.repos["alice/all-heads"].branches["main"]]
        assert "modeling_glipv2_detection.py" in files.files and "pipelines_glipv2.py" in files.files
        (tmp_path / "remote").mkdir()
        remote, image, inputs = _run_remote("alice/all-heads", "alice/all-heads-closed", tmp_path / "remote", hub)
    finally:
        server.stop()
    _assert_equal(remote, _local(folder, closed, image, inputs))


def test_pipelines_with_a_batch_size_give_each_image_its_own_result(tmp_path: Path) -> None:
    """`batch_size` over images of several sizes: each of this library's pipelines returns what it returns for each
    image alone (transformers' generic collate would pad `pixel_mask` as a token sequence and fail). transformers'
    own pipelines that serve the models (zero-shot-object-detection, object-detection, image-segmentation) run with
    the default batch_size of 1: their batching splits the output's `spatial_shapes` as if it had a batch axis."""
    from transformers import pipeline

    folder, _ = _save(tmp_path)
    images = [_scene(), _scene().resize((64, 96)), _scene().crop((0, 0, 48, 40))]
    labels = {"candidate_labels": LABELS, "threshold": 0.0}
    calls = {
        "open-vocabulary-detection": (folder, lambda x: x, {"max_detections": 5, **labels}),
        "visual-question-answering": (folder, lambda x: {"image": x, "question": "what colour?"}, {"top_k": 2}),
        "image-captioning": (folder, lambda x: x, {"max_new_tokens": 4}),
        "zero-shot-image-classification": (folder, lambda x: x, {"candidate_labels": ["a cat", "a dog"]}),
        "instance-segmentation": (folder, lambda x: x, {"top_k": 3, **labels}),
        "referring-segmentation": (folder, lambda x: x, {"expression": "the red square", "threshold": 0.0}),
    }
    with torch.no_grad():
        for task, (model, wrap, kwargs) in calls.items():
            runner = pipeline(task, model=str(model))
            alone = [runner(wrap(image), **kwargs) for image in images]
            batched = runner([wrap(image) for image in images], batch_size=3, **kwargs)
            _assert_equal(batched, alone, task)
