#!/usr/bin/env bash
# Writes the GLIP-T pre-training data (configs/pretrain_glip_t.yaml) as Parquet shards with the images inside.
#
#   bash scripts/prepare_pretraining_shards.sh DATA SHARDS [PSEUDO_LABELS.json PSEUDO_IMAGE_DIR]
#
# DATA holds the datasets as distributed (see docs/pretraining.md):
#   DATA/objects365/zhiyuan_objv2_train.json, DATA/objects365/train/   Objects365 v2 (COCO format)
#   DATA/mdetr_annotations/final_mixed_train_no_coco.json, DATA/gqa/images/       GoldG: GQA + Visual Genome
#   DATA/mdetr_annotations/final_flickr_separateGT_train.json, DATA/flickr30k/flickr30k-images/   GoldG: Flickr30k
# With PSEUDO_LABELS.json (scripts/pseudo_label.py output) and its image folder, caption pseudo-labels become a
# third grounding part. Each source is one `part` of its task folder, so a part can be re-written alone.
set -euo pipefail
if [ $# -ne 2 ] && [ $# -ne 4 ]; then
    sed -n '2,12p' "$0" >&2
    exit 2
fi
DATA=$1
SHARDS=$2
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python}
RECORDS=${RECORDS_PER_SHARD:-2000}
write() {
    "$PYTHON" "$HERE/write_shards.py" --output_dir "$SHARDS" --records_per_shard "$RECORDS" --skip_invalid "$@"
}
write --task detection --part objects365 \
    --annotation_file "$DATA/objects365/zhiyuan_objv2_train.json" --image_dir "$DATA/objects365/train"
write --task grounding --part mixed \
    --annotation_file "$DATA/mdetr_annotations/final_mixed_train_no_coco.json" --image_dir "$DATA/gqa/images"
write --task grounding --part flickr \
    --annotation_file "$DATA/mdetr_annotations/final_flickr_separateGT_train.json" \
    --image_dir "$DATA/flickr30k/flickr30k-images"
if [ $# -eq 4 ]; then
    write --task grounding --part pseudo --annotation_file "$3" --image_dir "$4"
fi
