"""Self-training helpers: phrase finding by vocabulary, grouping repeated phrases, and the box-recovery score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.pseudo_label import box_recovery, group_phrases, read_vocabulary, vocabulary_spans


def test_vocabulary_spans_prefer_longest_whole_word_matches() -> None:
    caption = "A Red Star to the left of a star, a starfish and a red star."
    spans = vocabulary_spans(caption, ["star", "red star", " "])
    assert spans == [(2, 10), (28, 32), (51, 59)]
    assert [caption[b:e] for b, e in spans] == ["Red Star", "star", "red star"]
    assert vocabulary_spans("a blue circle.", ["red star"]) == []
    with pytest.raises(ValueError, match="vocabulary is empty"):
        vocabulary_spans("a red star.", ["", "  "])


def test_group_phrases_merges_repeated_mentions() -> None:
    caption = "a red circle to the left of a Red  circle and a star."
    groups = group_phrases(caption, vocabulary_spans(caption, ["red circle", "star"]))
    assert groups == [[(2, 12), (30, 41)], [(48, 52)]]
    with pytest.raises(ValueError, match="outside the caption"):
        group_phrases("a star.", [(2, 40)])


def _mdetr(boxes: list[tuple[list[float], list[list[int]]]], caption: str = "a red star and a cross.") -> dict:
    return {
        "images": [{"id": 1, "file_name": "x.png", "caption": caption}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "bbox": bbox, "tokens_positive": spans}
            for i, (bbox, spans) in enumerate(boxes)
        ],
    }


def test_box_recovery_counts_matches_by_iou_and_phrase() -> None:
    star, cross = [[2, 10]], [[17, 22]]
    reference = _mdetr([([0, 0, 10, 10], star), ([20, 20, 10, 10], cross), ([50, 50, 10, 10], star)])
    pseudo = _mdetr(
        [
            ([0, 0, 10, 12], star),  # IoU 100/120 = 0.83 with the first star: recovered
            ([20, 20, 10, 10], star),  # exact box of the cross, but labelled "red star": not a match
            ([50, 50, 10, 20], star),  # IoU 100/200 = 0.5 with the second star: recovered (>= 0.5)
            ([0, 0, 10, 10], star),  # duplicate of the first star: each reference box counts once
        ]
    )
    result = box_recovery(pseudo, reference)
    assert result == {"recall": 2 / 3, "precision": 2 / 4, "recovered": 2, "reference_boxes": 3, "pseudo_boxes": 4}
    assert box_recovery(pseudo, reference, iou_threshold=0.6)["recovered"] == 1
    other_caption = _mdetr([([0, 0, 10, 10], star)], caption="a red star.")
    assert box_recovery(other_caption, reference)["recovered"] == 0


def test_read_vocabulary_formats(tmp_path: Path) -> None:
    (tmp_path / "v.txt").write_text("red star\n\n cross \n")
    (tmp_path / "v.json").write_text(json.dumps(["red star", "cross"]))
    (tmp_path / "coco.json").write_text(json.dumps({"categories": [{"id": 1, "name": "red star"}]}))
    (tmp_path / "empty.txt").write_text("\n")
    assert read_vocabulary(str(tmp_path / "v.txt")) == ["red star", "cross"]
    assert read_vocabulary(str(tmp_path / "v.json")) == ["red star", "cross"]
    assert read_vocabulary(str(tmp_path / "coco.json")) == ["red star"]
    with pytest.raises(ValueError, match="empty.txt: no phrases"):
        read_vocabulary(str(tmp_path / "empty.txt"))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_vocabulary(str(tmp_path / "missing.txt"))


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from scripts.pseudo_label import main

    (tmp_path / "captions.json").write_text(json.dumps({"images": [], "annotations": []}))
    base = ["--teacher", str(tmp_path), "--captions", str(tmp_path / "captions.json"), "--image-dir", str(tmp_path)]
    assert main([*base, "--vocabulary", str(tmp_path / "absent.txt"), "--output", str(tmp_path / "o.json")]) == 2
    assert "pseudo_label.py: error: Vocabulary file" in capsys.readouterr().err
    try:
        import spacy

        spacy.load("en_core_web_sm")
    except (ImportError, OSError):  # without spaCy's model, noun phrases cannot be found: say how to fix it
        assert main([*base, "--output", str(tmp_path / "o.json")]) == 2
        assert "en_core_web_sm" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
