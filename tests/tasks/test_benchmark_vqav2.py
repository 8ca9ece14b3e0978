"""`--benchmark vqav2`: VQAv2 files exactly as distributed (`v2_OpenEnded_mscoco_val2014_questions.json`,
`v2_mscoco_val2014_annotations.json`, `val2014/COCO_val2014_<id>.jpg`, the test-dev2015/test2015 questions with the
`test2015/` images); the accuracy equals an independent port of the official `vqaEval.py` on the results file the
run writes, computed from the RAW annotator answers."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from scripts.evaluate_model import main
from tests.benchmark_fixtures import write_image, write_json

# --------------------------------------------------------------------------------------------------------------------
# An independent straight port of the official evaluation (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/
# vqaEval.py and PythonHelperTools/vqaTools/vqa.py `loadRes`, commit a013f0043c1e2cdc995922dfe257f7149aa9af06), from
# Python 2 to Python 3 and nothing else: no project code is imported for it.
_CONTRACTIONS = dict(
    pair.split("=")
    for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd
howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've
it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've
mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've
oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't shouldnt've=shouldn't've
shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've somebody'dve=somebody'd've
somebodyll=somebody'll somebodys=somebody's someoned=someone'd someoned've=someone'd've
someone'dve=someone'd've someonell=someone'll someones=someone's somethingd=something'd
somethingd've=something'd've something'dve=something'd've somethingll=something'll thats=that's thered=there'd
thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd theyd've=they'd've
they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've
we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're whats=what's whatve=what've
whens=when's whered=where'd wheres=where's whereve=where've whod=who'd whod've=who'd've who'dve=who'd've
wholl=who'll whos=who's whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've
wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll
yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've
youll=you'll youre=you're youve=you've
""".split()
)
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


class ReferenceVQAEval:
    """`VQAEval` of vqaEval.py, line by line (Python 3 syntax)."""

    def __init__(self, annotations: dict[str, Any], results: list[dict[str, Any]], n: int = 2) -> None:
        self.n = n
        self.qa = {ann["question_id"]: copy.deepcopy(ann) for ann in annotations["annotations"]}
        self.question_ids = [ann["question_id"] for ann in annotations["annotations"]]  # vqa.getQuesIds()
        assert isinstance(results, list), "results is not an array of objects"
        assert {ann["question_id"] for ann in results} == set(self.question_ids), "Results do not correspond"
        self.res = {ann["question_id"]: ann for ann in results}
        self.manual_map = {
            "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
        }  # fmt: skip
        self.articles = ["a", "an", "the"]
        self.accuracy: dict[str, Any] = {}
        self.unrounded: dict[int, float] = {}

    def evaluate(self) -> None:
        acc_qa, acc_ques_type, acc_ans_type = [], {}, {}
        for ques_id in self.question_ids:
            gts = self.qa[ques_id]
            for ans_dic in gts["answers"]:
                ans_dic["answer"] = ans_dic["answer"].replace("\n", " ")
                ans_dic["answer"] = ans_dic["answer"].replace("\t", " ")
                ans_dic["answer"] = ans_dic["answer"].strip()
            res_ans = self.res[ques_id]["answer"]
            res_ans = res_ans.replace("\n", " ")
            res_ans = res_ans.replace("\t", " ")
            res_ans = res_ans.strip()
            gt_acc = []
            gt_answers = [ans["answer"] for ans in gts["answers"]]
            if len(set(gt_answers)) > 1:
                for ans_dic in gts["answers"]:
                    ans_dic["answer"] = self.process_punctuation(ans_dic["answer"])
                    ans_dic["answer"] = self.process_digit_article(ans_dic["answer"])
                res_ans = self.process_punctuation(res_ans)
                res_ans = self.process_digit_article(res_ans)
            for gt_ans_datum in gts["answers"]:
                other_gt_ans = [item for item in gts["answers"] if item != gt_ans_datum]
                matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
                acc = min(1, float(len(matching_ans)) / 3)
                gt_acc.append(acc)
            avg_gt_acc = float(sum(gt_acc)) / len(gt_acc)
            acc_qa.append(avg_gt_acc)
            acc_ques_type.setdefault(gts["question_type"], []).append(avg_gt_acc)
            acc_ans_type.setdefault(gts["answer_type"], []).append(avg_gt_acc)
            self.unrounded[ques_id] = avg_gt_acc
        self.accuracy["overall"] = round(100 * float(sum(acc_qa)) / len(acc_qa), self.n)
        self.accuracy["perQuestionType"] = {
            key: round(100 * float(sum(values)) / len(values), self.n) for key, values in acc_ques_type.items()
        }
        self.accuracy["perAnswerType"] = {
            key: round(100 * float(sum(values)) / len(values), self.n) for key, values in acc_ans_type.items()
        }
        self.overall_fraction = float(sum(acc_qa)) / len(acc_qa)

    def process_punctuation(self, in_text: str) -> str:
        out_text = in_text
        for p in _PUNCT:
            if (p + " " in in_text or " " + p in in_text) or (re.search(_COMMA_STRIP, in_text) is not None):
                out_text = out_text.replace(p, "")
            else:
                out_text = out_text.replace(p, " ")
        out_text = _PERIOD_STRIP.sub("", out_text, re.UNICODE)  # the official call: re.UNICODE (32) is the count
        return out_text

    def process_digit_article(self, in_text: str) -> str:
        out_text = []
        for word in in_text.lower().split():
            word = self.manual_map.setdefault(word, word)
            if word not in self.articles:
                out_text.append(word)
        for word_id, word in enumerate(out_text):
            if word in _CONTRACTIONS:
                out_text[word_id] = _CONTRACTIONS[word]
        return " ".join(out_text)


def reference_eval(annotations_file: Path, results_file: Path) -> ReferenceVQAEval:
    annotations = json.loads(annotations_file.read_text())
    evaluator = ReferenceVQAEval(annotations, json.loads(results_file.read_text()))
    evaluator.evaluate()
    return evaluator


# --------------------------------------------------------------------------------------------------------------------
# The fixture, in the official formats. Answers as annotators typed them.
MANY_DOTS = "stop" + "." * 40  # 40 periods: the official strip removes only the first 32
QUESTIONS = [  # (image_id, question, question_type, answer_type, answers)
    (42, "How many dogs are there?", "how many", "number",
     ["two", "two", "2", "Two", "two", "3", "2", "two", "2", "3"]),
    (42, "How many cats are there?", "how many", "number", ["two"] * 10),  # identical: never normalised
    (42, "How many people are in the picture?", "how many", "number", ["2"] * 10),
    (42, "Is the dog sleeping?", "is the", "yes/no", ["yes"] * 7 + ["no"] * 3),
    (42, "Is it sunny?", "is it", "yes/no", ["Yes"] * 10),  # identical: "yes" does not match "Yes"
    (73, "What is on the table?", "what is on the", "other",
     ["the bananas", "Bananas!", "bananas", "banana", "a banana", "bananas.", "fruit", "Fruit", "bananas", "food"]),
    (73, "What color is the car?", "what color is the", "other",
     ["red/white", "red and white", "red", "red", "Red", "red", "white", "red ", "red\n", "red"]),
    (73, "What does the sign say?", "what does the", "other",
     ["stop", "stop", MANY_DOTS, "STOP", "stop sign", "stop sign", "stop sign", "red", "stop sign", "octagon"]),
    (73, "What time is it?", "what time", "other",
     ["2:50", "2:50 pm", "2:50", "ten to three", "2:50", "3:00", "2:50", "2:50pm", "2:50", "afternoon"]),
    (74, "How many people live here?", "how many", "number",
     ["1,000", "1000", "1000", "one thousand", "1000", "1,000", "thousands", "1000", "100", "many"]),
    (74, "Is there a cat?", "is there a", "yes/no", ["no", "no ", "no", "no", "no", "no", "no\t", "no", "no", "no"]),
    (74, "What is the man holding?", "what is the man", "other",
     ["an umbrella", "umbrella", "Umbrella", "umbrella\n", "the", "the umbrella", "umbrella", "?", "umbrella", "b"]),
]  # fmt: skip
ANSWERS = ["2", "3", "yes", "no", "bananas", "red", "stop", "2:50", "1000", "umbrella", "two"]
INFO = {"description": "This is v2.0 of the VQA dataset.", "url": "http://visualqa.org", "version": "2.0"}
LICENSE = {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0"}
TEST_QUESTIONS = [(1, "What is it?"), (1, "How many?"), (9, "Is it red?")]


def _questions_file(subtype: str, questions: list[dict[str, Any]]) -> dict[str, Any]:
    header = {"task_type": "Open-Ended", "data_type": "mscoco", "license": LICENSE, "data_subtype": subtype}
    return {"info": INFO, **header, "questions": questions}


def _vqa_root(root: Path) -> Path:
    """The VQAv2 val2014 and test2015 files as the VQA and COCO sites distribute them."""
    questions, annotations, counts = [], [], {}
    for image_id, question, question_type, answer_type, answers in QUESTIONS:
        question_id = image_id * 1000 + counts.setdefault(image_id, 0)
        counts[image_id] += 1
        questions.append({"image_id": image_id, "question": question, "question_id": question_id})
        entries = [
            {"answer": answer, "answer_confidence": ("yes", "maybe")[index % 2], "answer_id": index + 1}
            for index, answer in enumerate(answers)
        ]
        annotations.append(
            {
                "question_type": question_type,
                "multiple_choice_answer": max(answers, key=answers.count).strip(),
                "answers": entries,
                "image_id": image_id,
                "answer_type": answer_type,
                "question_id": question_id,
            }
        )
    write_json(root / "v2_OpenEnded_mscoco_val2014_questions.json", _questions_file("val2014", questions))
    gt = {"info": INFO, "license": LICENSE, "data_subtype": "val2014", "annotations": annotations}
    write_json(root / "v2_mscoco_val2014_annotations.json", gt)
    for index, image_id in enumerate(sorted(counts)):
        write_image(
            root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", Image.new("RGB", (64, 48), (index * 60,) * 3)
        )
    test = [{"image_id": i, "question": q, "question_id": i * 1000 + k} for k, (i, q) in enumerate(TEST_QUESTIONS)]
    write_json(root / "v2_OpenEnded_mscoco_test-dev2015_questions.json", _questions_file("test-dev2015", test[:2]))
    write_json(root / "v2_OpenEnded_mscoco_test2015_questions.json", _questions_file("test2015", test))
    for image_id in (1, 9):
        write_image(root / "test2015" / f"COCO_test2015_{image_id:012d}.jpg", Image.new("RGB", (48, 64), (90, 20, 20)))
    return root


@pytest.fixture(scope="module")
def vqa_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _vqa_root(tmp_path_factory.mktemp("vqav2"))


def _answerer(folder: Path, answer: str) -> Path:
    """A tiny `Glipv2ForQuestionAnswering` over the fixture's answers that always answers `answer` (its
    classifier's weights are zero, so the logits are its bias)."""
    from glipv2 import Glipv2ForQuestionAnswering
    from tests.conftest import bert_processor, tiny_config

    processor = bert_processor(64)
    torch.manual_seed(0)
    config = tiny_config(id2label=dict(enumerate(ANSWERS)), label2id={a: i for i, a in enumerate(ANSWERS)})
    model = Glipv2ForQuestionAnswering(config).eval()
    with torch.no_grad():
        model.vqa_head.classifier.weight.zero_()
        model.vqa_head.classifier.bias.zero_()
        model.vqa_head.classifier.bias[ANSWERS.index(answer)] = 1.0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def answers_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _answerer(tmp_path_factory.mktemp("answers_two"), "2")


def _project_score(prediction: str, answers: list[str]) -> float:
    from tasks.metrics.vqa_accuracy.vqa_normalization import official_vqa_accuracy

    return official_vqa_accuracy(prediction, answers)


# --------------------------------------------------------------------------------------------------------------------
def test_metric_equals_the_reference_port_on_every_question(tmp_path: Path) -> None:
    """Many predictions (the fixture's raw answers, normalised ones, odd spellings) on every question."""
    import evaluate

    from tasks.spec import METRICS_DIR

    root = _vqa_root(tmp_path)
    annotations = json.loads((root / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]
    candidates = sorted({answer for *_, answers in QUESTIONS for answer in answers} | set(ANSWERS))
    candidates += ["Yes", " yes\n", "two.", "2.", "the 2", MANY_DOTS, "stop" + "." * 32, "red white", "1000."]
    metric = evaluate.load(f"{METRICS_DIR}/vqa_accuracy")
    for candidate in candidates:
        results = [{"question_id": ann["question_id"], "answer": candidate} for ann in annotations]
        results_file = write_json(tmp_path / "results.json", results)
        reference = reference_eval(root / "v2_mscoco_val2014_annotations.json", results_file)
        for ann in annotations:
            raw = [entry["answer"] for entry in ann["answers"]]
            assert _project_score(candidate, raw) == reference.unrounded[ann["question_id"]], (candidate, raw)
        computed = metric.compute(
            predictions=[candidate] * len(annotations),
            references=[[entry["answer"] for entry in ann["answers"]] for ann in annotations],
            answer_types=[ann["answer_type"] for ann in annotations],
            question_types=[ann["question_type"] for ann in annotations],
        )
        assert computed["official"] == reference.accuracy, candidate
        assert computed["accuracy"] == pytest.approx(reference.overall_fraction, abs=1e-12)


def test_official_quirks_by_hand() -> None:
    sign = QUESTIONS[7][4]
    # The sign: the answers disagree, so all are normalised: "stop", "stop", "STOP" -> "stop" (3 of them); the
    # 40-period answer keeps 8 periods ("stop........": only 32 are stripped). Leaving out one of the 3 "stop":
    # 2 matches -> 2/3 (3 times); leaving out any other: 3 matches -> 1 (7 times) => (3 * 2/3 + 7) / 10 = 0.9.
    assert _project_score("stop", sign) == pytest.approx(0.9)
    # a prediction with 40 periods is cut the same way and matches only that answer: 0 or 1/3 => 9/30 = 0.3
    assert _project_score(MANY_DOTS, sign) == pytest.approx(0.3)
    # ten identical "Yes": no normalisation at all, so "yes" never matches; ten "two": "2" scores 0, "two" 1
    assert _project_score("yes", QUESTIONS[4][4]) == 0.0 and _project_score("Yes", QUESTIONS[4][4]) == 1.0
    assert _project_score("2", QUESTIONS[1][4]) == 0.0 and _project_score("two", QUESTIONS[1][4]) == 1.0
    # "no", "no ", "no\t": stripped first, then identical
    assert _project_score("no", QUESTIONS[10][4]) == 1.0
    # "1,000" (a digit-comma-digit): every mark is deleted, so "1000"; "one thousand" stays two words
    # -> "1000" five + two = 7 times => 1.0; "100" once => 0.3
    assert _project_score("1000", QUESTIONS[9][4]) == 1.0 and _project_score("100", QUESTIONS[9][4]) == pytest.approx(
        0.3
    )
    # "red/white" -> "red white" (no space touches "/"), "red and white" keeps its "and": "red white" once => 0.3
    assert _project_score("red white", QUESTIONS[6][4]) == pytest.approx(0.3)


def test_val2014_accuracy_equals_the_official_algorithm_on_the_written_results(
    answers_two: Path, vqa_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = ["--model", str(answers_two), "--benchmark", "vqav2", "--root", str(vqa_root), "--output-dir", str(out)]
    assert main([*argv, "--cpu", "--batch-size", "5"]) == 0
    summary = json.loads((out / "vqav2_val2014_metrics.json").read_text())
    assert summary["benchmark"] == "vqav2" and summary["split"] == "val2014"
    assert summary["num_samples"] == len(QUESTIONS) and summary["partial"] is False
    results_file = out / "vqa_OpenEnded_mscoco_val2014_glipv2_results.json"
    assert summary["files"]["results"] == str(results_file)
    results = json.loads(results_file.read_text())
    assert all(set(entry) == {"question_id", "answer"} for entry in results)
    assert [entry["answer"] for entry in results] == ["2"] * len(QUESTIONS)
    reference = reference_eval(vqa_root / "v2_mscoco_val2014_annotations.json", results_file)
    metrics = summary["metrics"]
    assert metrics["official"] == reference.accuracy
    assert metrics["accuracy"] == pytest.approx(reference.overall_fraction, abs=1e-12)
    # By hand, the number questions answered "2": dogs 1.0 (two/Two/2 are all "2" once normalised, 7 of them);
    # cats 0 (ten identical "two", compared unnormalised); people 1.0 (ten "2"); "1,000"... 0 => 2.0 / 4 = 50%.
    assert metrics["official"]["perAnswerType"]["number"] == 50.0 and metrics["accuracy_number"] == 0.5
    assert metrics["official"]["perAnswerType"]["yes/no"] == 0.0
    assert metrics["official"]["perQuestionType"]["how many"] == round(100 * 2 / 4, 2)
    # The normalised answers as references (the training answers) would score the cats 1.0: not the official number
    from tasks.vqa.vqav2 import load_vqa

    dataset = load_vqa(
        vqa_root / "v2_OpenEnded_mscoco_val2014_questions.json",
        vqa_root / "v2_mscoco_val2014_annotations.json",
        vqa_root / "val2014",
        official_eval=True,
    )
    assert dataset[1]["answers"] == ["2"] * 10 and dataset[1]["raw_answers"] == ["two"] * 10
    assert _project_score("2", dataset[1]["answers"]) == 1.0 != reference.unrounded[42001]


@pytest.mark.parametrize("split", ["test-dev2015", "test2015"])
def test_server_splits_write_a_results_entry_for_every_question(
    answers_two: Path, vqa_root: Path, tmp_path: Path, split: str
) -> None:
    out = tmp_path / "out"
    argv = ["--model", str(answers_two), "--benchmark", "vqav2", "--root", str(vqa_root), "--split", split]
    assert main([*argv, "--output-dir", str(out), "--cpu"]) == 0
    summary = json.loads((out / f"vqav2_{split}_metrics.json").read_text())
    questions = json.loads((vqa_root / f"v2_OpenEnded_mscoco_{split}_questions.json").read_text())["questions"]
    assert summary["metrics"] == {} and summary["num_samples"] == len(questions)
    results_file = out / f"vqa_OpenEnded_mscoco_{split}_glipv2_results.json"
    assert summary["files"] == {"results": str(results_file)}
    assert json.loads(results_file.read_text()) == [
        {"question_id": q["question_id"], "answer": "2"} for q in questions
    ]


def _mutated_root(vqa_root: Path, tmp_path: Path, name: str, mutate: Any) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    for entry in vqa_root.iterdir():
        (root / entry.name).symlink_to(entry)
    data = json.loads((vqa_root / name).read_text())
    mutate(data)
    (root / name).unlink()
    write_json(root / name, data)
    return root


def _drop(data: dict[str, Any], key: str) -> None:
    del data["annotations"][3][key]


MALFORMED = [
    ("missing answer type", "v2_mscoco_val2014_annotations.json", lambda d: _drop(d, "answer_type"),
     "question id=42003", "answer_type"),
    ("missing answers", "v2_mscoco_val2014_annotations.json", lambda d: _drop(d, "answers"),
     "question id=42003", "answers"),
    ("answer not a string", "v2_mscoco_val2014_annotations.json",
     lambda d: d["annotations"][3]["answers"][2].update(answer=2), "question id=42003", "answer"),
    ("question type not a string", "v2_mscoco_val2014_annotations.json",
     lambda d: d["annotations"][3].update(question_type=None), "question id=42003", "question_type"),
    ("unknown question id", "v2_mscoco_val2014_annotations.json",
     lambda d: d["annotations"].append({**d["annotations"][0], "question_id": 5}), "question id=5", "question_id"),
    ("image id as a string", "v2_OpenEnded_mscoco_val2014_questions.json",
     lambda d: d["questions"][2].update(image_id="42"), "question id=42002", "image_id"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "name", "mutate", "record", "field"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_files_name_file_record_and_field(
    vqa_root: Path, tmp_path: Path, case: str, name: str, mutate: Any, record: str, field: str
) -> None:
    from tasks.common import Glipv2DataError

    root = _mutated_root(vqa_root, tmp_path, name, mutate)
    argv = ["--model", "unused", "--benchmark", "vqav2", "--root", str(root), "--output-dir", str(tmp_path / "o")]
    with pytest.raises(Glipv2DataError) as error:
        main([*argv, "--cpu"])
    assert error.value.file == str(root / name) and record in error.value.record and error.value.field == field
    assert str(root / name) in str(error.value) and f"field '{field}'" in str(error.value)


def test_missing_official_files_are_named(tmp_path: Path) -> None:
    argv = ["--model", "m", "--benchmark", "vqav2", "--root", str(tmp_path), "--output-dir", str(tmp_path / "o")]
    (tmp_path / "val2014").mkdir()
    with pytest.raises(FileNotFoundError, match=r"'vqav2', split 'val2014': expected the official annotation file"):
        main(argv)
    (tmp_path / "v2_mscoco_val2014_annotations.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"official questions file 'v2_OpenEnded_mscoco_val2014_questions"):
        main(argv)
    (tmp_path / "test2015").mkdir()
    with pytest.raises(FileNotFoundError, match=r"'vqav2', split 'test-dev2015'.*v2_OpenEnded_mscoco_test-dev2015_q"):
        main([*argv, "--split", "test-dev2015"])


def test_list_benchmarks_prints_the_official_files(capsys: pytest.CaptureFixture) -> None:
    assert main(["--list-benchmarks"]) == 0
    printed = capsys.readouterr().out
    assert "vqav2 (task vqa)" in printed
    assert "test-dev2015 [evaluation server: submission file only]" in printed
    assert "annotation_file=v2_mscoco_val2014_annotations.json" in printed
    assert "questions_file=v2_OpenEnded_mscoco_test2015_questions.json, image_dir=test2015" in printed
