"""ODinW (Object Detection in the Wild) zero-shot box AP as GLIP evaluates it: `odinw13` and `odinw35`.

One command runs every dataset of the suite. The table below is GLIP's per-dataset configs (microsoft/GLIP
`configs/odinw_13/*.yaml`, `configs/odinw_35/*.yaml`, the 35 in `configs/odinw_35/_all.json`): each dataset's COCO
file and image folder for the split GLIP's zero-shot command evaluates (`DATASETS.TEST`: `val`, or `minival` for
some) and for its registered `test` split, its category names after `DATASETS.OVERRIDE_CATEGORY` (ids 1..K in
order in every config), and its `DATASETS.CAPTION_PROMPT` where it has one. Paths are relative to the ODinW root,
GLIP's `DATASET/odinw` (`odinw/download.py --dataset_path`).

GLIP's README command (`tools/test_grounding_net.py ... TEST.EVAL_TASK detection DATASETS.USE_OVERRIDE_CATEGORY True
DATASETS.USE_CAPTION_PROMPT True`) builds the dataset's categories from the override (`COCODataset` replaces the
file's `categories`), forms one prompt of all of them in order (`create_queries_and_maps`: `clean_name` of each name
joined by `". "`, or `prefix + name + suffix` per caption-prompt entry), and scores the predictions with
pycocotools' COCOeval against the file with the overridden categories; the suite's number is the mean of the
datasets' AP.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from glipv2.processing_glipv2 import Glipv2Prompt
from tasks.metrics.coco_detection.coco_detection import to_coco_results
from tasks.protocol import Benchmark, BenchmarkResult, BenchmarkRun
from tasks.spec import DataFiles

SPLITS = ("val", "test")


@dataclass(frozen=True)
class OdinwDataset:
    """One ODinW dataset as GLIP's config for it registers it.

    Attributes:
        name: the config's file name without `.yaml`.
        val: `(annotation file, image folder)` of the config's `DATASETS.TEST` split (`val` or `minival`).
        test: `(annotation file, image folder)` of the config's registered `test` split.
        categories: `DATASETS.OVERRIDE_CATEGORY` names, category ids 1, 2, ... in this order.
        caption_prompt: `DATASETS.CAPTION_PROMPT` as `(prefix, name, suffix)` per category, or None.
    """

    name: str
    val: tuple[str, str]
    test: tuple[str, str]
    categories: tuple[str, ...]
    caption_prompt: tuple[tuple[str, str, str], ...] | None = None

    def files(self, split: str) -> tuple[str, str]:
        """`(annotation file, image folder)` of `split` (`val` or `test`), relative to the ODinW root."""
        if split not in SPLITS:
            raise ValueError(f"ODinW splits are {list(SPLITS)}, got {split!r}")
        return self.val if split == "val" else self.test

    def category_entries(self) -> list[dict[str, Any]]:
        """The overriding COCO `categories` (GLIP replaces the file's with these)."""
        return [{"id": index + 1, "name": name} for index, name in enumerate(self.categories)]

    def labels(self) -> list[str]:
        """Each category's name in the prompt: `clean_name` of the override name."""
        from tasks.transforms import clean_category_name

        return [clean_category_name(name) for name in self.categories]

    def prompt(self) -> Glipv2Prompt:
        """The evaluation prompt as GLIP's `create_queries_and_maps` writes it (`label_ids` index `categories`)."""
        from tasks.detection.prompts import caption_prompt

        return caption_prompt(self.labels(), self.caption_prompt)


def missing_files(datasets: tuple[OdinwDataset, ...], root: str, split: str) -> list[tuple[str, str, str]]:
    """`(dataset, what, relative path)` for each official file or folder of `split` not under `root`."""
    missing = []
    for dataset in datasets:
        annotation_file, image_dir = dataset.files(split)
        for what, name, check in (
            ("annotation file", annotation_file, os.path.isfile),
            ("image folder", image_dir, os.path.isdir),
        ):
            if not check(os.path.join(root, name)):
                missing.append((dataset.name, what, name))
    return missing


def run_odinw(run: BenchmarkRun, datasets: tuple[OdinwDataset, ...]) -> BenchmarkResult | None:
    """Every dataset of the suite in turn; per-dataset COCO metrics and their mean AP. All files are checked (present,
    well-formed) before any image is run."""
    from tasks.detection.prompts import predict_with_prompts
    from tasks.detection.task import load
    from tasks.evaluation import predict_dataset

    missing = missing_files(datasets, run.root, run.split)
    if missing:
        name, what, path = missing[0]
        others = f" ({len(missing) - 1} more files missing)" if len(missing) > 1 else ""
        raise FileNotFoundError(
            f"benchmark {run.benchmark.name!r}, split {run.split!r}: dataset {name!r} expects its {what} {path!r} "
            f"under the ODinW root {run.root!r} ({os.path.join(run.root, path)} does not exist){others}."
        )
    loaded = []
    for dataset in datasets:
        annotation_file, image_dir = dataset.files(run.split)
        files = DataFiles(os.path.join(run.root, image_dir), os.path.join(run.root, annotation_file))
        loaded.append((dataset, load(files, run.max_samples)))
    metric = run.metric() if run.is_main_process else None
    per_dataset: dict[str, dict[str, float]] = {}
    written: dict[str, str] = {}
    for dataset, data in loaded:
        category_ids = [entry["id"] for entry in dataset.category_entries()]
        predict = functools.partial(
            predict_with_prompts, labels=dataset.labels(), category_ids=category_ids, prompts=[dataset.prompt()]
        )
        predictions = predict_dataset(
            predict, run.accelerator, run.model(), run.processor(), data, run.batch_size, run.options
        )
        if predictions is None:
            continue
        ground_truth = {**data.ground_truth, "categories": dataset.category_entries()}
        per_dataset[dataset.name] = metric.compute(
            predictions=predictions, ground_truth=ground_truth, box_format="xyxy"
        )
        name = f"{run.benchmark.name}_{run.split}_{dataset.name}_results.json"
        written[f"{dataset.name} results"] = run.write_json(name, to_coco_results(predictions, "xyxy"))
    if not run.is_main_process:
        return None
    average = sum(metrics["AP"] for metrics in per_dataset.values()) / len(per_dataset)
    metrics: dict[str, Any] = {"AP": average}
    metrics.update({f"{name}/AP": values["AP"] for name, values in per_dataset.items()})
    metrics["datasets"] = per_dataset
    return BenchmarkResult(metrics, sum(len(data.dataset) for _, data in loaded), written)


def _files(datasets: tuple[OdinwDataset, ...]) -> dict[str, dict[str, str]]:
    return {
        split: {
            f"{dataset.name}/{key}": path
            for dataset in datasets
            for key, path in zip(("annotation_file", "image_dir"), dataset.files(split))
        }
        for split in SPLITS
    }


_PROTOCOL = (
    "{title}: zero-shot box AP as GLIP's README command evaluates each dataset (tools/test_grounding_net.py with "
    "the dataset's {configs} config, DATASETS.USE_OVERRIDE_CATEGORY True, DATASETS.USE_CAPTION_PROMPT True), and "
    "the mean of the datasets' AP@[.5:.95] as GLIP reports it (per-dataset AP, AP50, ... under 'datasets'). "
    "Split val is each config's DATASETS.TEST (valid/, or mini_val/ where GLIP evaluates on its minival), split "
    "test its registered test set. Per dataset: the categories of OVERRIDE_CATEGORY (replacing the file's), in "
    "order, in one prompt -- clean_name of each joined by '. ', or prefix + name + suffix where the config has a "
    "CAPTION_PROMPT; GLIP's test settings (score threshold 0.05, 100 detections per image, NMS 0.6 per class); "
    "COCO AP by pycocotools' COCOeval semantics (faster-coco-eval, maxDets 100) on every image of the file "
    "(Roboflow's exports number annotations from 0: as in pycocotools, a detection matched to annotation 0 counts "
    "as a false positive). The root is GLIP's DATASET/odinw (odinw/download.py); every dataset must be there and "
    "well-formed, checked before any image is run: a missing file fails naming the dataset and the file. "
    "--max-samples N takes the first N images of each dataset."
)


def _benchmark(name: str, datasets: tuple[OdinwDataset, ...], title: str, configs: str) -> Benchmark:
    return Benchmark(
        name=name,
        task="detection",
        splits=SPLITS,
        files=_files(datasets),
        run=functools.partial(run_odinw, datasets=datasets),
        protocol=_PROTOCOL.format(title=title, configs=configs),
    )


# configs/odinw_13/*.yaml (GLIP's ODinW-13), in case-insensitive file name order.
ODINW13_DATASETS = (
    OdinwDataset(
        "AerialMaritimeDrone_large",
        val=("AerialMaritimeDrone/large/valid/annotations_without_background.json", "AerialMaritimeDrone/large/valid"),
        test=("AerialMaritimeDrone/large/test/annotations_without_background.json", "AerialMaritimeDrone/large/test"),
        categories=("boat", "car", "dock", "jetski", "lift"),
    ),
    OdinwDataset(
        "Aquarium_Aquarium_Combined.v2-raw-1024.coco",
        val=(
            "Aquarium/Aquarium Combined.v2-raw-1024.coco/valid/annotations_without_background.json",
            "Aquarium/Aquarium Combined.v2-raw-1024.coco/valid",
        ),
        test=(
            "Aquarium/Aquarium Combined.v2-raw-1024.coco/test/annotations_without_background.json",
            "Aquarium/Aquarium Combined.v2-raw-1024.coco/test",
        ),
        categories=("fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"),
    ),
    OdinwDataset(
        "CottontailRabbits",
        val=("CottontailRabbits/valid/annotations_without_background.json", "CottontailRabbits/valid"),
        test=("CottontailRabbits/test/annotations_without_background.json", "CottontailRabbits/test"),
        categories=("Cottontail-Rabbit",),
    ),
    OdinwDataset(
        "EgoHands_generic",
        val=("EgoHands/generic/mini_val/annotations_without_background.json", "EgoHands/generic/mini_val"),
        test=("EgoHands/generic/test/annotations_without_background.json", "EgoHands/generic/test"),
        categories=("hand",),
    ),
    OdinwDataset(
        "NorthAmericaMushrooms_North_American_Mushrooms.v1-416x416.coco",
        val=(
            "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/valid/annotations_without_background.json",
            "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/valid",
        ),
        test=(
            "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/test/annotations_without_background.json",
            "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/test",
        ),
        categories=("CoW", "chanterelle"),
    ),
    OdinwDataset(
        "Packages_Raw",
        val=("Packages/Raw/valid/annotations_without_background.json", "Packages/Raw/valid"),
        test=("Packages/Raw/test/annotations_without_background.json", "Packages/Raw/test"),
        categories=("package",),
    ),
    OdinwDataset(
        "PascalVOC",
        val=("PascalVOC/valid/annotations_without_background.json", "PascalVOC/valid"),
        test=("PascalVOC/valid/annotations_without_background.json", "PascalVOC/valid"),
        categories=(
            "aeroplane",
            "bicycle",
            "bird",
            "boat",
            "bottle",
            "bus",
            "car",
            "cat",
            "chair",
            "cow",
            "diningtable",
            "dog",
            "horse",
            "motorbike",
            "person",
            "pottedplant",
            "sheep",
            "sofa",
            "train",
            "tvmonitor",
        ),
    ),
    OdinwDataset(
        "pistols_export",
        val=("pistols/export/val_annotations_without_background.json", "pistols/export"),
        test=("pistols/export/test_annotations_without_background.json", "pistols/export"),
        categories=("pistol",),
    ),
    OdinwDataset(
        "pothole",
        val=("pothole/valid/annotations_without_background.json", "pothole/valid"),
        test=("pothole/test/annotations_without_background.json", "pothole/test"),
        categories=("pothole",),
    ),
    OdinwDataset(
        "Raccoon_Raccoon.v2-raw.coco",
        val=(
            "Raccoon/Raccoon.v2-raw.coco/valid/annotations_without_background.json",
            "Raccoon/Raccoon.v2-raw.coco/valid",
        ),
        test=(
            "Raccoon/Raccoon.v2-raw.coco/test/annotations_without_background.json",
            "Raccoon/Raccoon.v2-raw.coco/test",
        ),
        categories=("raccoon",),
    ),
    OdinwDataset(
        "ShellfishOpenImages_raw",
        val=("ShellfishOpenImages/raw/valid/annotations_without_background.json", "ShellfishOpenImages/raw/valid"),
        test=("ShellfishOpenImages/raw/test/annotations_without_background.json", "ShellfishOpenImages/raw/test"),
        categories=("Crab", "Lobster", "Shrimp"),
    ),
    OdinwDataset(
        "thermalDogsAndPeople",
        val=("thermalDogsAndPeople/valid/annotations_without_background.json", "thermalDogsAndPeople/valid"),
        test=("thermalDogsAndPeople/test/annotations_without_background.json", "thermalDogsAndPeople/test"),
        categories=("dog", "person"),
    ),
    OdinwDataset(
        "VehiclesOpenImages_416x416",
        val=(
            "VehiclesOpenImages/416x416/mini_val/annotations_without_background.json",
            "VehiclesOpenImages/416x416/mini_val",
        ),
        test=(
            "VehiclesOpenImages/416x416/test/annotations_without_background.json",
            "VehiclesOpenImages/416x416/test",
        ),
        categories=("Ambulance", "Bus", "Car", "Motorcycle", "Truck"),
    ),
)

# configs/odinw_35/*.yaml in the order of configs/odinw_35/_all.json (ODinW-35; plantdoc_100x100.yaml is not in it).
ODINW35_DATASETS = (
    OdinwDataset(
        "AerialMaritimeDrone_large",
        val=("AerialMaritimeDrone/large/valid/annotations_without_background.json", "AerialMaritimeDrone/large/valid"),
        test=("AerialMaritimeDrone/large/test/annotations_without_background.json", "AerialMaritimeDrone/large/test"),
        categories=("boat", "car", "dock", "jetski", "lift"),
    ),
    OdinwDataset(
        "AerialMaritimeDrone_tiled",
        val=("AerialMaritimeDrone/tiled/valid/annotations_without_background.json", "AerialMaritimeDrone/tiled/valid"),
        test=("AerialMaritimeDrone/tiled/test/annotations_without_background.json", "AerialMaritimeDrone/tiled/test"),
        categories=("boat", "car", "dock", "jetski", "lift"),
    ),
    OdinwDataset(
        "AmericanSignLanguageLetters_American_Sign_Language_Letters.v1-v1.coco",
        val=(
            "AmericanSignLanguageLetters/American Sign Language Letters.v1-v1.coco/valid/"
            "annotations_without_background.json",
            "AmericanSignLanguageLetters/American Sign Language Letters.v1-v1.coco/valid",
        ),
        test=(
            "AmericanSignLanguageLetters/American Sign Language Letters.v1-v1.coco/test/"
            "annotations_without_background.json",
            "AmericanSignLanguageLetters/American Sign Language Letters.v1-v1.coco/test",
        ),
        categories=(
            "A",
            "B",
            "C",
            "D",
            "E",
            "F",
            "G",
            "H",
            "I",
            "J",
            "K",
            "L",
            "M",
            "N",
            "O",
            "P",
            "Q",
            "R",
            "S",
            "T",
            "U",
            "V",
            "W",
            "X",
            "Y",
            "Z",
        ),
    ),
    OdinwDataset(
        "Aquarium_Aquarium_Combined.v2-raw-1024.coco",
        val=(
            "Aquarium/Aquarium Combined.v2-raw-1024.coco/valid/annotations_without_background.json",
            "Aquarium/Aquarium Combined.v2-raw-1024.coco/valid",
        ),
        test=(
            "Aquarium/Aquarium Combined.v2-raw-1024.coco/test/annotations_without_background.json",
            "Aquarium/Aquarium Combined.v2-raw-1024.coco/test",
        ),
        categories=("fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"),
        caption_prompt=(
            (" ", "fish", ""),
            ("", "jellyfish", ""),
            ("", "penguin", " , which is black and white"),
            ("", "puffin", " with orange beaks "),
            ("", "shark", ""),
            ("", "starfish", ""),
            ("", "stingray", " which is flat and round"),
        ),
    ),
    OdinwDataset(
        "BCCD_BCCD.v3-raw.coco",
        val=("BCCD/BCCD.v3-raw.coco/valid/annotations_without_background.json", "BCCD/BCCD.v3-raw.coco/valid"),
        test=("BCCD/BCCD.v3-raw.coco/test/annotations_without_background.json", "BCCD/BCCD.v3-raw.coco/test"),
        categories=("Platelets", "RBC", "WBC"),
    ),
    OdinwDataset(
        "ChessPieces_Chess_Pieces.v23-raw.coco",
        val=(
            "ChessPieces/Chess Pieces.v23-raw.coco/valid/annotations_without_background.json",
            "ChessPieces/Chess Pieces.v23-raw.coco/valid",
        ),
        test=(
            "ChessPieces/Chess Pieces.v23-raw.coco/test/annotations_without_background.json",
            "ChessPieces/Chess Pieces.v23-raw.coco/test",
        ),
        categories=(
            "  ",
            "black bishop",
            "black king",
            "black knight",
            "black pawn",
            "black queen",
            "black rook",
            "white bishop",
            "white king",
            "white knight",
            "white pawn",
            "white queen",
            "white rook",
        ),
    ),
    OdinwDataset(
        "CottontailRabbits",
        val=("CottontailRabbits/valid/annotations_without_background.json", "CottontailRabbits/valid"),
        test=("CottontailRabbits/test/annotations_without_background.json", "CottontailRabbits/test"),
        categories=("rabbit",),
    ),
    OdinwDataset(
        "DroneControl_Drone_Control.v3-raw.coco",
        val=(
            "DroneControl/Drone Control.v3-raw.coco/mini_val/annotations_without_background.json",
            "DroneControl/Drone Control.v3-raw.coco/mini_val",
        ),
        test=(
            "DroneControl/Drone Control.v3-raw.coco/test/annotations_without_background.json",
            "DroneControl/Drone Control.v3-raw.coco/test",
        ),
        categories=("follow", "follow_hand", "land", "land_hand", "null", "object", "takeoff", "takeoff-hand"),
    ),
    OdinwDataset(
        "EgoHands_generic",
        val=("EgoHands/generic/mini_val/annotations_without_background.json", "EgoHands/generic/mini_val"),
        test=("EgoHands/generic/test/annotations_without_background.json", "EgoHands/generic/test"),
        categories=("hand",),
        caption_prompt=((" ", "hand", " of a person"),),
    ),
    OdinwDataset(
        "EgoHands_specific",
        val=("EgoHands/specific/mini_val/annotations_without_background.json", "EgoHands/specific/mini_val"),
        test=("EgoHands/specific/test/annotations_without_background.json", "EgoHands/specific/test"),
        categories=("myleft", "myright", "yourleft", "yourright"),
    ),
    OdinwDataset(
        "HardHatWorkers_raw",
        val=("HardHatWorkers/raw/valid/annotations_without_background.json", "HardHatWorkers/raw/valid"),
        test=("HardHatWorkers/raw/test/annotations_without_background.json", "HardHatWorkers/raw/test"),
        categories=("head", "helmet", "person"),
    ),
    OdinwDataset(
        "MaskWearing_raw",
        val=("MaskWearing/raw/valid/annotations_without_background.json", "MaskWearing/raw/valid"),
        test=("MaskWearing/raw/test/annotations_without_background.json", "MaskWearing/raw/test"),
        categories=("mask", "no-mask"),
    ),
    OdinwDataset(
        "MountainDewCommercial",
        val=("MountainDewCommercial/valid/annotations_without_background.json", "MountainDewCommercial/valid"),
        test=("MountainDewCommercial/test/annotations_without_background.json", "MountainDewCommercial/test"),
        categories=("bottle",),
    ),
    OdinwDataset(
        "NorthAmericaMushrooms_North_American_Mushrooms.v1-416x416.coco",
        val=(
            "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/valid/annotations_without_background.json",
            "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/valid",
        ),
        test=(
            "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/test/annotations_without_background.json",
            "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/test",
        ),
        categories=("flat mushroom", "yellow mushroom"),
    ),
    OdinwDataset(
        "OxfordPets_by-breed",
        val=("OxfordPets/by-breed/mini_val/annotations_without_background.json", "OxfordPets/by-breed/mini_val"),
        test=("OxfordPets/by-breed/test/annotations_without_background.json", "OxfordPets/by-breed/test"),
        categories=(
            "cat-Abyssinian",
            "cat-Bengal",
            "cat-Birman",
            "cat-Bombay",
            "cat-British_Shorthair",
            "cat-Egyptian_Mau",
            "cat-Maine_Coon",
            "cat-Persian",
            "cat-Ragdoll",
            "cat-Russian_Blue",
            "cat-Siamese",
            "cat-Sphynx",
            "dog-american_bulldog",
            "dog-american_pit_bull_terrier",
            "dog-basset_hound",
            "dog-beagle",
            "dog-boxer",
            "dog-chihuahua",
            "dog-english_cocker_spaniel",
            "dog-english_setter",
            "dog-german_shorthaired",
            "dog-great_pyrenees",
            "dog-havanese",
            "dog-japanese_chin",
            "dog-keeshond",
            "dog-leonberger",
            "dog-miniature_pinscher",
            "dog-newfoundland",
            "dog-pomeranian",
            "dog-pug",
            "dog-saint_bernard",
            "dog-samoyed",
            "dog-scottish_terrier",
            "dog-shiba_inu",
            "dog-staffordshire_bull_terrier",
            "dog-wheaten_terrier",
            "dog-yorkshire_terrier",
        ),
    ),
    OdinwDataset(
        "OxfordPets_by-species",
        val=("OxfordPets/by-species/mini_val/annotations_without_background.json", "OxfordPets/by-species/mini_val"),
        test=("OxfordPets/by-species/test/annotations_without_background.json", "OxfordPets/by-species/test"),
        categories=("cat", "dog"),
    ),
    OdinwDataset(
        "PKLot_640",
        val=("PKLot/640/mini_val/annotations_without_background.json", "PKLot/640/mini_val"),
        test=("PKLot/640/test/annotations_without_background.json", "PKLot/640/test"),
        categories=("space-empty", "space-occupied"),
    ),
    OdinwDataset(
        "Packages_Raw",
        val=("Packages/Raw/valid/annotations_without_background.json", "Packages/Raw/valid"),
        test=("Packages/Raw/test/annotations_without_background.json", "Packages/Raw/test"),
        categories=("package",),
        caption_prompt=(("there is a ", "package", " on the porch"),),
    ),
    OdinwDataset(
        "PascalVOC",
        val=("PascalVOC/valid/annotations_without_background.json", "PascalVOC/valid"),
        test=("PascalVOC/valid/annotations_without_background.json", "PascalVOC/valid"),
        categories=(
            "aeroplane",
            "bicycle",
            "bird",
            "boat",
            "bottle",
            "bus",
            "car",
            "cat",
            "chair",
            "cow",
            "diningtable",
            "dog",
            "horse",
            "motorbike",
            "person",
            "pottedplant",
            "sheep",
            "sofa",
            "train",
            "tvmonitor",
        ),
    ),
    OdinwDataset(
        "Raccoon_Raccoon.v2-raw.coco",
        val=(
            "Raccoon/Raccoon.v2-raw.coco/valid/annotations_without_background.json",
            "Raccoon/Raccoon.v2-raw.coco/valid",
        ),
        test=(
            "Raccoon/Raccoon.v2-raw.coco/test/annotations_without_background.json",
            "Raccoon/Raccoon.v2-raw.coco/test",
        ),
        categories=("raccoon",),
    ),
    OdinwDataset(
        "ShellfishOpenImages_raw",
        val=("ShellfishOpenImages/raw/valid/annotations_without_background.json", "ShellfishOpenImages/raw/valid"),
        test=("ShellfishOpenImages/raw/test/annotations_without_background.json", "ShellfishOpenImages/raw/test"),
        categories=("Crab", "Lobster", "Shrimp"),
    ),
    OdinwDataset(
        "ThermalCheetah",
        val=("ThermalCheetah/valid/annotations_without_background.json", "ThermalCheetah/valid"),
        test=("ThermalCheetah/test/annotations_without_background.json", "ThermalCheetah/test"),
        categories=("cheetah", "human"),
    ),
    OdinwDataset(
        "UnoCards_raw",
        val=("UnoCards/raw/mini_val/annotations_without_background.json", "UnoCards/raw/mini_val"),
        test=("UnoCards/raw/test/annotations_without_background.json", "UnoCards/raw/test"),
        categories=("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14"),
    ),
    OdinwDataset(
        "VehiclesOpenImages_416x416",
        val=(
            "VehiclesOpenImages/416x416/mini_val/annotations_without_background.json",
            "VehiclesOpenImages/416x416/mini_val",
        ),
        test=(
            "VehiclesOpenImages/416x416/test/annotations_without_background.json",
            "VehiclesOpenImages/416x416/test",
        ),
        categories=("Ambulance", "Bus", "Car", "Motorcycle", "Truck"),
    ),
    OdinwDataset(
        "WildfireSmoke",
        val=("WildfireSmoke/valid/annotations_without_background.json", "WildfireSmoke/valid"),
        test=("WildfireSmoke/test/annotations_without_background.json", "WildfireSmoke/test"),
        categories=("smoke",),
    ),
    OdinwDataset(
        "boggleBoards_416x416AutoOrient_export_",
        val=(
            "boggleBoards/416x416AutoOrient/export/val_annotations_without_background.json",
            "boggleBoards/416x416AutoOrient/export",
        ),
        test=(
            "boggleBoards/416x416AutoOrient/export/test_annotations_without_background.json",
            "boggleBoards/416x416AutoOrient/export",
        ),
        categories=(
            "Q",
            "a",
            "an",
            "b",
            "c",
            "d",
            "e",
            "er",
            "f",
            "g",
            "h",
            "he",
            "i",
            "in",
            "j",
            "k",
            "l",
            "m",
            "n",
            "o",
            "o ",
            "p",
            "q",
            "qu",
            "r",
            "s",
            "t",
            "t\\",
            "th",
            "u",
            "v",
            "w",
            "wild",
            "x",
            "y",
            "z",
        ),
    ),
    OdinwDataset(
        "brackishUnderwater_960x540",
        val=(
            "brackishUnderwater/960x540/mini_val/annotations_without_background.json",
            "brackishUnderwater/960x540/mini_val",
        ),
        test=(
            "brackishUnderwater/960x540/test/annotations_without_background.json",
            "brackishUnderwater/960x540/test",
        ),
        categories=("crab", "fish", "jellyfish", "shrimp", "small_fish", "starfish"),
    ),
    OdinwDataset(
        "dice_mediumColor_export",
        val=("dice/mediumColor/export/val_annotations_without_background.json", "dice/mediumColor/export"),
        test=("dice/mediumColor/export/test_annotations_without_background.json", "dice/mediumColor/export"),
        categories=("1", "2", "3", "4", "5", "6"),
    ),
    OdinwDataset(
        "openPoetryVision_512x512",
        val=(
            "openPoetryVision/512x512/mini_val/annotations_without_background.json",
            "openPoetryVision/512x512/mini_val",
        ),
        test=("openPoetryVision/512x512/test/annotations_without_background.json", "openPoetryVision/512x512/test"),
        categories=(
            "American Typewriter",
            "Andale Mono",
            "Apple Chancery",
            "Arial",
            "Avenir",
            "Baskerville",
            "Big Caslon",
            "Bradley Hand",
            "Brush Script MT",
            "Chalkboard",
            "Comic Sans MS",
            "Copperplate",
            "Courier",
            "Didot",
            "Futura",
            "Geneva",
            "Georgia",
            "Gill Sans",
            "Helvetica",
            "Herculanum",
            "Impact",
            "Kefa",
            "Lucida Grande",
            "Luminari",
            "Marker Felt",
            "Menlo",
            "Monaco",
            "Noteworthy",
            "Optima",
            "PT Sans",
            "PT Serif",
            "Palatino",
            "Papyrus",
            "Phosphate",
            "Rockwell",
            "SF Pro",
            "SignPainter",
            "Skia",
            "Snell Roundhand",
            "Tahoma",
            "Times New Roman",
            "Trebuchet MS",
            "Verdana",
        ),
    ),
    OdinwDataset(
        "pistols_export",
        val=("pistols/export/val_annotations_without_background.json", "pistols/export"),
        test=("pistols/export/test_annotations_without_background.json", "pistols/export"),
        categories=("pistol",),
    ),
    OdinwDataset(
        "plantdoc_416x416",
        val=("plantdoc/416x416/valid/annotations_without_background.json", "plantdoc/416x416/valid"),
        test=("plantdoc/416x416/test/annotations_without_background.json", "plantdoc/416x416/test"),
        categories=(
            "Apple Scab Leaf",
            "Apple leaf",
            "Apple rust leaf",
            "Bell_pepper leaf",
            "Bell_pepper leaf spot",
            "Blueberry leaf",
            "Cherry leaf",
            "Corn Gray leaf spot",
            "Corn leaf blight",
            "Corn rust leaf",
            "Peach leaf",
            "Potato leaf",
            "Potato leaf early blight",
            "Potato leaf late blight",
            "Raspberry leaf",
            "Soyabean leaf",
            "Soybean leaf",
            "Squash Powdery mildew leaf",
            "Strawberry leaf",
            "Tomato Early blight leaf",
            "Tomato Septoria leaf spot",
            "Tomato leaf",
            "Tomato leaf bacterial spot",
            "Tomato leaf late blight",
            "Tomato leaf mosaic virus",
            "Tomato leaf yellow virus",
            "Tomato mold leaf",
            "Tomato two spotted spider mites leaf",
            "grape leaf",
            "grape leaf black rot",
        ),
    ),
    OdinwDataset(
        "pothole",
        val=("pothole/valid/annotations_without_background.json", "pothole/valid"),
        test=("pothole/test/annotations_without_background.json", "pothole/test"),
        categories=("pothole",),
        caption_prompt=(("there are some ", "holes", " on the road"),),
    ),
    OdinwDataset(
        "selfdrivingCar_fixedLarge_export_",
        val=(
            "selfdrivingCar/fixedLarge/export/val_annotations_without_background.json",
            "selfdrivingCar/fixedLarge/export",
        ),
        test=(
            "selfdrivingCar/fixedLarge/export/test_annotations_without_background.json",
            "selfdrivingCar/fixedLarge/export",
        ),
        categories=(
            "biker",
            "car",
            "pedestrian",
            "trafficLight",
            "trafficLight-Green",
            "trafficLight-GreenLeft",
            "trafficLight-Red",
            "trafficLight-RedLeft",
            "trafficLight-Yellow",
            "trafficLight-YellowLeft",
            "truck",
        ),
    ),
    OdinwDataset(
        "thermalDogsAndPeople",
        val=("thermalDogsAndPeople/valid/annotations_without_background.json", "thermalDogsAndPeople/valid"),
        test=("thermalDogsAndPeople/test/annotations_without_background.json", "thermalDogsAndPeople/test"),
        categories=("dog", "person"),
    ),
    OdinwDataset(
        "websiteScreenshots",
        val=("websiteScreenshots/mini_val/annotations_without_background.json", "websiteScreenshots/mini_val"),
        test=("websiteScreenshots/test/annotations_without_background.json", "websiteScreenshots/test"),
        categories=("button", "field", "heading", "iframe", "image", "label", "link", "text"),
    ),
)


ODINW13 = _benchmark(
    "odinw13", ODINW13_DATASETS, "ODinW-13 (GLIP's 13 datasets, microsoft/GLIP configs/odinw_13)", "configs/odinw_13"
)
ODINW35 = _benchmark(
    "odinw35",
    ODINW35_DATASETS,
    "ODinW-35 (the 35 datasets of microsoft/GLIP configs/odinw_35/_all.json)",
    "configs/odinw_35",
)

BENCHMARKS = (ODINW13, ODINW35)

__all__ = [
    "BENCHMARKS",
    "ODINW13",
    "ODINW13_DATASETS",
    "ODINW35",
    "ODINW35_DATASETS",
    "OdinwDataset",
    "missing_files",
    "run_odinw",
]
