"""Publishing end to end against a Hub-protocol server on 127.0.0.1 (`tests/hub_server.py`) with the real
`huggingface_hub` client: create, upload (scripts/push_to_hub.py), two pushes and the older revision by sha, a
private repository, and the remote-code round trips of every Auto class and pipeline in a process where `glipv2`
cannot be imported, with outputs equal to the local model's.

Every Hub call runs in a subprocess: `HF_ENDPOINT` and `HF_HUB_DISABLE_XET` are read when `huggingface_hub` is
imported, and this test process is offline (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from PIL import Image, ImageDraw
from transformers import pipeline

import glipv2
from glipv2 import (
    Glipv2ForGrounding,
    Glipv2ForObjectDetection,
    Glipv2ForPreTraining,
    Glipv2Model,
    Glipv2Processor,
)
from glipv2.auto_map import TASK_CLASSES
from tasks.publish import load_metrics, prepare_for_hub, render_model_card, supported_classes
from tests.conftest import bert_processor, tiny_config
from tests.hub_server import HubServer, validate_card

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hf_glipv2TestTokenDoNotLeak0123456789"
USER = "alice"
LABELS = ["red square", "blue circle"]
CAPTION = "red square. blue circle"
PUBLIC, PRIVATE, CLOSED = f"{USER}/glipv2-tiny", f"{USER}/glipv2-private", f"{USER}/glipv2-tiny-closed"
ALL = f"{USER}/glipv2-tiny-all-heads"
ANSWERS = ["red", "blue", "two"]
QUESTION = "what colour is the square?"
METRICS = {"detection": {"AP": 0.8125, "AP50": 0.953}, "grounding": {"recall@1": 0.71, "recall@5": 0.9}}


def _scene() -> Image.Image:
    image = Image.new("RGB", (64, 64), (40, 40, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle([10, 12, 40, 50], fill=(220, 30, 30))
    draw.ellipse([44, 4, 60, 20], fill=(30, 30, 220))
    return image


def _save_model(folder: Path, seed: int) -> Glipv2ForObjectDetection:
    """A tiny-random closed-vocabulary detector with its processor: serves every detection Auto class and pipeline."""
    processor = bert_processor(64)
    torch.manual_seed(seed)
    model = Glipv2ForObjectDetection(tiny_config(fusion_attention_dropout=0.0)).eval()
    model.set_vocabulary(processor, LABELS)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "training_recipe.json").write_text(json.dumps({"tasks": [{"name": "detection", "loss_weight": 1.0}]}))
    return model


def _env(home: Path, token: str | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HF_HOME": str(home / "hf"),
        "HF_MODULES_CACHE": str(home / "modules"),
        "HF_ENDPOINT": "",  # set per server below
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path, log: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    log += [result.stdout, result.stderr]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    server = HubServer(tokens={TOKEN: USER}).start()
    yield server
    server.stop()


PUSHES = textwrap.dedent(
    """
    import json, sys
    from huggingface_hub import HfApi
    from scripts.push_to_hub import main
    shas = []
    for argv in json.loads(sys.argv[1]):
        assert main(argv) == 0
        revision = argv[argv.index("--revision") + 1] if "--revision" in argv else None
        shas.append(HfApi().model_info(argv[argv.index("--repo_id") + 1], revision=revision).sha)
    print("SHAS", json.dumps(shas))
    """
)


def _save_all_heads(folder: Path, processor: Glipv2Processor) -> None:
    """A tiny pre-training checkpoint (every head; VQA answers in id2label): serves every task class."""
    torch.manual_seed(3)
    Glipv2ForPreTraining(tiny_config(id2label=dict(enumerate(ANSWERS)))).save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "metrics.json").write_text(json.dumps({"vqa": {"accuracy": 0.625}, "captioning": {"CIDEr": 1.25}}))


@pytest.fixture(scope="module")
def published(hub: HubServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Pushes with scripts/push_to_hub.py: two versions of a detector (with metrics) to a public repository, the
    first to a private one, a tokenizer-free copy to a branch, and an all-heads checkpoint."""
    root = tmp_path_factory.mktemp("hub")
    models = {}
    for name, seed in (("v1", 1), ("v2", 2)):
        models[name] = _save_model(root / name, seed)
    processor = Glipv2Processor.from_pretrained(root / "v1")
    # a closed-vocabulary detector without tokenizer files, for the stock object-detection pipeline
    models["v1"].save_pretrained(root / "closed")
    processor.image_processor.save_pretrained(root / "closed")
    _save_all_heads(root / "all", processor)
    (root / "metrics.json").write_text(json.dumps(METRICS))
    metrics = ["--metrics", str(root / "metrics.json")]
    plan = [
        ["--model", str(root / "v1"), "--repo_id", PUBLIC, *metrics],
        ["--model", str(root / "v2"), "--repo_id", PUBLIC, *metrics, "--commit_message", "second version"],
        ["--model", str(root / "v1"), "--repo_id", PRIVATE, "--private"],
        ["--model", str(root / "closed"), "--repo_id", CLOSED, "--revision", "v1"],
        ["--model", str(root / "all"), "--repo_id", ALL, "--metrics", str(root / "all" / "metrics.json")],
    ]
    env = {**_env(root / "pusher", TOKEN), "HF_ENDPOINT": hub.url}
    log: list[str] = []
    result = _run([sys.executable, "-c", PUSHES, json.dumps(plan)], env, REPO, log)
    shas = json.loads(result.stdout.split("SHAS", 1)[1])
    return {"root": root, "models": models, "shas": shas, "log": log, "env": env}


def test_push_creates_commits_and_uploads_everything(published: dict, hub: HubServer) -> None:
    repo = hub.state.repos[PUBLIC]
    v1_sha, v2_sha, _, closed_sha, _ = published["shas"]
    closed = hub.state.repos[CLOSED]
    assert closed.branches["v1"] == closed_sha != closed.branches["main"]  # --revision pushed to a new branch
    assert "tokenizer.json" not in closed.commits[closed_sha].files
    assert repo.branches["main"] == v2_sha != v1_sha
    assert not repo.private and hub.state.repos[PRIVATE].private
    files = repo.commits[v1_sha].files
    expected = {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md"}
    expected |= {"modeling_glipv2_detection.py", "configuration_glipv2.py", "pipelines_glipv2.py", "fusion.py"}
    assert expected <= set(files)
    assert files["model.safetensors"] == (published["root"] / "v1" / "model.safetensors").read_bytes()
    assert (
        repo.commits[v2_sha].files["model.safetensors"]
        == (published["root"] / "v2" / "model.safetensors").read_bytes()
    )
    config = json.loads(files["config.json"])
    assert config["auto_map"] == {
        "AutoConfig": "configuration_glipv2.Glipv2Config",
        "AutoModel": "modeling_glipv2.Glipv2Model",
        "AutoModelForZeroShotObjectDetection": "modeling_glipv2_detection.Glipv2ForGrounding",
        "AutoModelForObjectDetection": "modeling_glipv2_detection.Glipv2ForObjectDetection",
    }
    assert config["custom_pipelines"]["phrase-grounding"] == {
        "impl": "pipelines_glipv2.Glipv2PhraseGroundingPipeline",
        "pt": ["AutoModelForZeroShotObjectDetection"],
        "type": "multimodal",
    }
    assert not (published["root"] / "v1" / "README.md").exists()  # the source folder is left as it was


def test_token_never_printed_logged_or_uploaded(published: dict, hub: HubServer) -> None:
    for text in published["log"]:
        assert TOKEN not in text
    for repo in hub.state.repos.values():
        for commit in repo.commits.values():
            for path, content in commit.files.items():
                assert TOKEN.encode() not in content, path
    for path in published["root"].rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert TOKEN.encode() not in path.read_bytes(), path
    assert all(TOKEN not in path for _, path, _ in hub.state.requests)


def test_all_heads_checkpoint_maps_every_task_class(published: dict, hub: HubServer) -> None:
    files = hub.state.repos[ALL].commits[published["shas"][4]].files
    config = json.loads(files["config.json"])
    expected = {"AutoConfig": glipv2.Glipv2Config} | {
        entry.auto_class: getattr(glipv2, entry.name)
        for entry in TASK_CLASSES
        if not entry.requires and "mask_head" not in entry.heads  # no closed vocabulary, no mask head
    }
    assert config["auto_map"] == {
        name: f"{cls.__module__.split('.')[-1]}.{cls.__name__}" for name, cls in expected.items()
    }
    assert set(config["custom_pipelines"]) == {
        "open-vocabulary-detection",
        "phrase-grounding",
        "visual-question-answering",
        "image-captioning",
    }
    assert config["custom_pipelines"]["visual-question-answering"]["impl"] == (
        "pipelines_glipv2_vqa.Glipv2VisualQuestionAnsweringPipeline"
    )
    front = yaml.safe_load(files["README.md"].decode().split("---")[1])
    values = {
        (result["task"]["type"], metric["type"]): metric["value"]
        for result in front["model-index"][0]["results"]
        for metric in result["metrics"]
    }
    assert values == {("visual-question-answering", "accuracy"): 0.625, ("image-to-text", "CIDEr"): 1.25}
    card = files["README.md"].decode()
    assert 'pipeline("visual-question-answering", model="alice/glipv2-tiny-all-heads", trust_remote_code=True)' in card
    assert 'pipeline("image-captioning", model="alice/glipv2-tiny-all-heads", trust_remote_code=True)' in card


def test_uploaded_card_front_matter_has_the_metrics(published: dict, hub: HubServer) -> None:
    card = hub.state.repos[PUBLIC].commits[published["shas"][1]].files["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and front["license"] == "mit"
    assert front["pipeline_tag"] == "zero-shot-object-detection"
    assert {"glipv2", "zero-shot-object-detection", "object-detection", "phrase-grounding"} <= set(front["tags"])
    values = {
        (result["task"]["type"], metric["type"]): metric["value"]
        for entry in front["model-index"]
        for result in entry["results"]
        for metric in result["metrics"]
    }
    assert values == {
        ("object-detection", "AP"): 0.8125,
        ("object-detection", "AP50"): 0.953,
        ("zero-shot-object-detection", "recall@1"): 0.71,
        ("zero-shot-object-detection", "recall@5"): 0.9,
    }
    assert 'pipeline("phrase-grounding", model="alice/glipv2-tiny", trust_remote_code=True)' in card
    assert 'pipeline("object-detection", model="alice/glipv2-tiny", trust_remote_code=True)' in card
    # the object-detection pipeline runs with or without tokenizer files in the repository
    assert "| `AutoModelForObjectDetection` | `object-detection` |" in card
    closed_card = hub.state.repos[CLOSED].commits[published["shas"][3]].files["README.md"].decode()
    assert "| `AutoModelForObjectDetection` | `object-detection` |" in closed_card


def test_card_reads_evaluate_script_output_and_recipe(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    Glipv2ForGrounding(tiny_config()).save_pretrained(folder)
    recipe = {"tasks": [{"name": "grounding", "sampling_weight": 1.0}], "data": {"datasets": ["flickr30k"]}}
    (folder / "training_recipe.json").write_text(json.dumps(recipe))
    evaluated = {"task": "grounding", "model": str(folder), "split": "val", "num_samples": 7, "metrics": {}}
    evaluated["metrics"] = {"recall@1": 0.5, "recall@5": 0.75, "recall@10": 1.0}
    (tmp_path / "results.json").write_text(json.dumps(evaluated))
    (tmp_path / "vqa.json").write_text(json.dumps({"vqa": {"accuracy": 0.625}, "detection": {"AP": 0.4, "APs": -1.0}}))
    metrics = load_metrics([tmp_path / "results.json", tmp_path / "vqa.json"])
    card = render_model_card(folder, metrics, repo_id="bob/g", base_model="bob/glipv2-base")
    front = yaml.safe_load(card.split("---")[1])
    assert front["datasets"] == ["flickr30k"] and front["base_model"] == "bob/glipv2-base"
    results = {r["task"]["type"]: r for r in front["model-index"][0]["results"]}
    grounding = results["zero-shot-object-detection"]
    assert grounding["dataset"]["split"] == "val"
    assert [m["value"] for m in grounding["metrics"]] == [0.5, 0.75, 1.0]
    assert results["object-detection"]["metrics"] == [{"type": "AP", "value": 0.4, "name": "AP"}]  # no -1 APs
    assert results["visual-question-answering"]["metrics"][0] == {
        "type": "accuracy",
        "value": 0.625,
        "name": "accuracy",
    }
    assert "sampling_weight 1.0" in card and "| grounding | grounding evaluation data | recall@1 | 0.5000 |" in card
    with pytest.raises(ValueError, match="unknown metrics task"):
        load_metrics([tmp_path / "results.json"]) and render_model_card(folder, {"segmentation": {"mIoU": 1.0}})


def test_dry_run_lists_and_uploads_nothing(published: dict, hub: HubServer, capsys: pytest.CaptureFixture) -> None:
    from scripts.push_to_hub import main

    before = len(hub.state.requests)
    assert main(["--model", str(published["root"] / "v1"), "--repo_id", f"{USER}/dry", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in ("README.md", "model.safetensors", "config.json", "pipelines_glipv2.py", "tokenizer.json"):
        assert f"  {name} (" in out
    assert "training_recipe.json" in out and len(hub.state.requests) == before
    assert f"{USER}/dry" not in hub.state.repos


def test_supported_tasks_follow_heads_and_config(tmp_path: Path) -> None:
    Glipv2Model(tiny_config()).save_pretrained(tmp_path / "base")
    Glipv2ForGrounding(tiny_config()).save_pretrained(tmp_path / "grounding")
    assert [entry.name for entry in supported_classes(tmp_path / "base")] == ["Glipv2Model"]
    assert [entry.name for entry in supported_classes(tmp_path / "grounding")] == ["Glipv2Model", "Glipv2ForGrounding"]
    prepared = prepare_for_hub(tmp_path / "base")
    assert "custom_pipelines" not in json.loads((tmp_path / "base" / "config.json").read_text())
    assert prepared["auto_map"]["AutoModel"] == "modeling_glipv2.Glipv2Model"
    # a closed-vocabulary class saved without its vocabulary: save_pretrained itself leaves that class out
    Glipv2ForObjectDetection(tiny_config()).save_pretrained(tmp_path / "no-vocabulary")
    saved = json.loads((tmp_path / "no-vocabulary" / "config.json").read_text())["auto_map"]
    assert "AutoModelForObjectDetection" not in saved and "AutoModelForZeroShotObjectDetection" in saved
    prepared = prepare_for_hub(tmp_path / "no-vocabulary")
    assert "AutoModelForObjectDetection" not in prepared["auto_map"]
    assert "AutoModelForZeroShotObjectDetection" in prepared["auto_map"]


def test_server_validates_card_metadata_like_the_hub(tmp_path: Path) -> None:
    Glipv2ForGrounding(tiny_config()).save_pretrained(tmp_path)
    card = render_model_card(tmp_path, {"detection": {"AP": 0.5}}, repo_id="bob/g")
    assert validate_card(card) == []
    assert validate_card(card.replace("pipeline_tag: zero-shot-object-detection", "pipeline_tag: nope")) == [
        "unknown pipeline_tag 'nope'"
    ]
    assert validate_card(card.replace("      value: 0.5", "      value: [0.5]")) == [
        "bad metric {'type': 'AP', 'value': [0.5], 'name': 'AP'}"
    ]


REMOTE = textwrap.dedent(
    """
    import json, os, sys
    sys.modules["glipv2"] = None  # glipv2 cannot be imported: only the repository's own code may run
    import torch
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError
    from PIL import Image
    from transformers import AutoConfig, AutoModel, AutoModelForObjectDetection, AutoModelForZeroShotObjectDetection
    from transformers import AutoProcessor, pipeline
    import transformers

    repo, private, closed, all_heads, old_sha, inputs_path, image_path, out_path = sys.argv[1:9]
    labels = ["red square", "blue circle"]
    inputs, image, out = torch.load(inputs_path), Image.open(image_path), {}

    def load(auto, name=repo, **kwargs):
        model = auto.from_pretrained(name, trust_remote_code=True, **kwargs).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        return model

    with torch.no_grad():
        for key, kwargs in (("grounding", {}), ("grounding_v1", {"revision": old_sha})):
            result = load(AutoModelForZeroShotObjectDetection, **kwargs)(**inputs["text"])
            out[key] = [result.logits, result.pred_boxes, result.centerness]
        result = load(AutoModelForObjectDetection)(**inputs["image"])
        out["detection"] = [result.logits, result.pred_boxes]
        result = load(AutoModel)(**inputs["text"])
        out["features"] = [*result.vision_features, result.text_features]

        for call in (hf_hub_download, AutoConfig.from_pretrained):
            try:
                call(private, "config.json") if call is hf_hub_download else call(private, trust_remote_code=True)
                raise SystemExit(f"{call.__name__} read the private repository without a token")
            except (RepositoryNotFoundError, OSError) as error:
                assert "not found" in str(error).lower() or "not a valid model identifier" in str(error), error
        private_model = load(AutoModelForZeroShotObjectDetection, private, token=os.environ["PRIVATE_TOKEN"])
        out["private"] = [private_model(**inputs["text"]).logits]
        try:  # the processor of a private repository, with the token
            AutoProcessor.from_pretrained(private, trust_remote_code=True, token=os.environ["PRIVATE_TOKEN"])
            out["private_processor"] = "loaded"
        except Exception as error:
            out["private_processor"] = f"{type(error).__name__}: {str(error)[:200]}"

        out["all_heads"] = {}  # every Auto class the all-heads checkpoint's auto_map lists
        for name in AutoConfig.from_pretrained(all_heads, trust_remote_code=True).auto_map:
            if name != "AutoConfig":
                result = load(getattr(transformers, name), all_heads)(**inputs["question"])
                out["all_heads"][name] = {k: v for k, v in result.items() if isinstance(v, torch.Tensor)}

    tasks = {
        "zero-shot-object-detection": dict(candidate_labels=labels, threshold=0.0, top_k=10),
        "open-vocabulary-detection": dict(candidate_labels=labels, threshold=0.0, top_k=10),
        "phrase-grounding": dict(caption="red square. blue circle", phrases=labels, threshold=0.0, top_k=3),
        "object-detection": dict(threshold=0.0),
    }
    for task, kwargs in tasks.items():
        name, revision = (closed, "v1") if task == "object-detection" else (repo, None)
        runner = pipeline(task, model=name, revision=revision, trust_remote_code=True)
        assert type(runner).__module__.startswith(("transformers_modules", "transformers.pipelines")), type(runner)
        out[task] = runner(image, **kwargs)
    vqa = pipeline("visual-question-answering", model=all_heads, trust_remote_code=True)
    assert type(vqa).__module__.startswith("transformers_modules"), type(vqa)
    out["visual-question-answering"] = vqa(image, "what colour is the square?", top_k=3)
    torch.save(out, out_path)
    """
)


def _local_outputs(folder: Path, inputs: dict) -> dict:
    with torch.no_grad():
        grounding = Glipv2ForGrounding.from_pretrained(folder).eval()(**inputs["text"])
        detection = Glipv2ForObjectDetection.from_pretrained(folder).eval()(**inputs["image"])
        features = Glipv2Model.from_pretrained(folder).eval()(**inputs["text"])
    return {
        "grounding": [grounding.logits, grounding.pred_boxes, grounding.centerness],
        "detection": [detection.logits, detection.pred_boxes],
        "features": [*features.vision_features, features.text_features],
    }


def _local_all_heads(folder: Path, auto_classes: list[str], inputs: dict) -> dict:
    outputs = {}
    with torch.no_grad():
        for name in auto_classes:
            result = getattr(transformers, name).from_pretrained(folder).eval()(**inputs)
            outputs[name] = {k: v for k, v in result.items() if isinstance(v, torch.Tensor)}
    return outputs


def _local_pipelines(folder: Path, closed: Path, image: Image.Image) -> dict:
    labels = {"candidate_labels": LABELS, "threshold": 0.0, "top_k": 10}
    return {
        "zero-shot-object-detection": pipeline("zero-shot-object-detection", model=str(folder))(image, **labels),
        "open-vocabulary-detection": pipeline("open-vocabulary-detection", model=str(folder))(image, **labels),
        "phrase-grounding": pipeline("phrase-grounding", model=str(folder))(
            image, caption=CAPTION, phrases=LABELS, threshold=0.0, top_k=3
        ),
        "object-detection": pipeline("object-detection", model=str(closed))(image, threshold=0.0),
        "visual-question-answering": pipeline("visual-question-answering", model=str(folder.parent / "all"))(
            image, QUESTION, top_k=3
        ),
    }


def _assert_same_results(remote: object, local: object) -> None:
    """Pipeline results (rounded by the pipelines to 4 decimals, boxes to 2) equal up to that rounding."""
    if isinstance(local, dict):
        assert set(remote) == set(local)
        for key in local:
            _assert_same_results(remote[key], local[key])
    elif isinstance(local, (list, tuple)):
        assert len(remote) == len(local)
        for a, b in zip(remote, local):
            _assert_same_results(a, b)
    elif isinstance(local, float):
        assert remote == pytest.approx(local, abs=0.011)
    else:
        assert remote == local


@pytest.fixture(scope="module")
def remote(published: dict, hub: HubServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Runs REMOTE in a fresh process where glipv2 cannot be imported; returns its outputs, inputs and stderr."""
    root, v1_sha, tmp_path = published["root"], published["shas"][0], tmp_path_factory.mktemp("remote")
    processor = Glipv2Processor.from_pretrained(root / "v2")
    image = _scene()
    image.save(tmp_path / "scene.png")
    text = dict(processor(images=image, text=[LABELS], return_tensors="pt"))
    inputs = {"text": text, "image": {k: text[k] for k in ("pixel_values", "pixel_mask")}}
    inputs["question"] = dict(processor(images=image, text=QUESTION, return_tensors="pt"))
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**_env(tmp_path / "remote", None), "HF_ENDPOINT": hub.url, "PRIVATE_TOKEN": TOKEN}
    paths = [str(tmp_path / name) for name in ("inputs.pt", "scene.png", "o.pt")]
    result = _run(
        [sys.executable, "-c", REMOTE, PUBLIC, PRIVATE, CLOSED, ALL, v1_sha, *paths], env, tmp_path, published["log"]
    )
    outputs = torch.load(tmp_path / "o.pt", weights_only=False)
    return {"outputs": outputs, "inputs": inputs, "image": image, "stderr": result.stderr}


def test_remote_models_equal_local_ones_by_revision_and_token(published: dict, remote: dict) -> None:
    root, inputs, outputs = published["root"], remote["inputs"], remote["outputs"]
    local_v2, local_v1 = _local_outputs(root / "v2", inputs), _local_outputs(root / "v1", inputs)
    expected = {**local_v2, "grounding_v1": local_v1["grounding"], "private": local_v1["grounding"][:1]}
    assert not torch.allclose(local_v1["grounding"][0], local_v2["grounding"][0])  # the two pushes differ
    for key, tensors in expected.items():
        assert len(outputs[key]) == len(tensors), key
        for got, want in zip(outputs[key], tensors):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=key)


def test_remote_all_heads_classes_equal_local_ones(published: dict, hub: HubServer, remote: dict) -> None:
    root, inputs, outputs = published["root"], remote["inputs"], remote["outputs"]
    config = json.loads(hub.state.repos[ALL].commits[published["shas"][4]].files["config.json"])
    auto_classes = [name for name in config["auto_map"] if name != "AutoConfig"]
    local_all = _local_all_heads(root / "all", auto_classes, inputs["question"])
    assert set(outputs["all_heads"]) == set(local_all) == set(auto_classes)
    for name, tensors in local_all.items():
        assert set(outputs["all_heads"][name]) == set(tensors), name
        for key, want in tensors.items():
            torch.testing.assert_close(outputs["all_heads"][name][key], want, rtol=1e-5, atol=1e-5, msg=name + key)


def test_remote_pipelines_equal_local_ones(published: dict, remote: dict) -> None:
    root = published["root"]
    local = _local_pipelines(root / "v2", root / "closed", remote["image"])
    for task, results in local.items():
        assert results, f"{task}: the local pipeline found nothing to compare"
        _assert_same_results(remote["outputs"][task], results)
    assert all(TOKEN not in text for text in published["log"])


def test_remote_processor_loads_from_private_repo_without_prompt(remote: dict) -> None:
    assert remote["outputs"]["private_processor"] == "loaded"
    assert "Do you wish to run the custom code?" not in remote["stderr"]


def test_adapter_folder_uploads_adapter_files_with_a_peft_card(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import save_file

    from scripts.push_to_hub import main

    folder = tmp_path / "adapter"
    folder.mkdir()
    adapter = {
        "peft_type": "LORA",
        "base_model_name_or_path": "alice/glipv2-tiny",
        "r": 4,
        "target_modules": ["q_proj"],
    }
    (folder / "adapter_config.json").write_text(json.dumps(adapter))
    save_file({"base_model.model.q_proj.lora_A.weight": torch.zeros(4, 8)}, str(folder / "adapter_model.safetensors"))
    (folder / "optimizer.pt").write_bytes(b"not uploaded")
    assert main(["--model", str(folder), "--repo_id", "alice/glipv2-lora", "--dry-run"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    front = yaml.safe_load(render_model_card(folder, repo_id="alice/glipv2-lora").split("---")[1])
    assert front["base_model"] == "alice/glipv2-tiny" and front["library_name"] == "peft" and "peft" in front["tags"]
