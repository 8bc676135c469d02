#!/usr/bin/env bash
# The whole pipeline on the bundled sample set with tiny random-weight models, on CPU, offline.
#
#   make demo                                     # = PYTHON=.venv/bin/python DEMO_DIR=demo_output bash scripts/demo.sh
#   PYTHON=python3 DEMO_DIR=/tmp/demo bash scripts/demo.sh
#
# Everything goes under DEMO_DIR (relative to the repository root, or absolute): the sample set,
# the tiny models, random FID Inception weights, and OUT = DEMO_DIR/out with every stage's output.
# A rerun reuses what an earlier run left: the builders, stage 2, the scorer and stage 3 skip what exists, stage 1
# is skipped once its records exist, stage 4 and the FID are redone only when their inputs are
# newer. The pictures are noise: the demo shows the pipeline and its files, not quality.
# (Empty arrays are expanded as ${a[@]+"${a[@]}"}: bash before 4.4, e.g. macOS's, calls a
# plain "${a[@]}" unbound under set -u.)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-.venv/bin/python}"
DEMO_DIR="${DEMO_DIR:-demo_output}"
SAMPLE="$DEMO_DIR/sample"
MODELS="$DEMO_DIR/models"
FID_WEIGHTS="$DEMO_DIR/random_fid_inception.pth"
OUT="$DEMO_DIR/out"
# The tiny GLIGEN models make 64-pixel pictures; a few steps keep the demo to minutes on 2 CPU cores.
GLIGEN_FAST=(--resolution 64 --steps 4 --device cpu)

step() { printf '\n=== %s\n' "$*"; }
# Print each command as a user would type it, then run it.
run() { printf '+'; printf ' %q' "$@"; printf '\n'; "$@"; }
# True when FILE is missing or a picture under the other arguments is newer than it (stage 2
# rewrites its manifest.jsonl on every run, so only the pictures tell that something changed).
stale() {
    local file="$1"
    shift
    [[ ! -f "$file" ]] || [[ -n "$(find "$@" -type f -name '*.png' -newer "$file" -print -quit)" ]]
}

step "sample set, tiny models, random FID weights (reused when present)"
run "$PYTHON" scripts/make_sample_dataset.py "$SAMPLE"
run "$PYTHON" scripts/make_tiny_models.py "$MODELS"
run "$PYTHON" scripts/make_random_fid_weights.py "$FID_WEIGHTS"

step "stage 1: select images and caption them with BLIP-2"
if [[ -f "$OUT/blip2_post.json" ]]; then
    echo "reusing $OUT/blip2_post.json (delete it to run stage 1 again)"
else
    run "$PYTHON" generate_prompt_blip2.py -i "$SAMPLE/images" -a "$SAMPLE/annotations.json" -o "$OUT" \
        --model "$MODELS/blip2" --device cpu
fi

for mode in generation inpainting; do
    step "stage 2: GLIGEN $mode (makes only the pictures still missing)"
    run "$PYTHON" generate_image_gligen.py --mode "$mode" -i "$SAMPLE/images" -p "$OUT/blip2_post.json" -o "$OUT" \
        -a "$SAMPLE/annotations.json" --model "$MODELS/gligen-$mode" "${GLIGEN_FAST[@]}"
done

step "quality scores: OWLv2 finds each box's object, CLIP scores its crop (scores only new or changed pictures)"
# DEMO-ONLY THRESHOLDS. Random-weight models never meet the real defaults (--min-iou 0.5, --min-region-clip
# 0.21, --max-extra-objects 0), so every picture would fail; these looser ones let a few pass and a few fail,
# so that the review page shows both. Never use them with real models.
DEMO_ONLY_THRESHOLDS=(--min-iou 0.15 --min-region-clip -0.35 --max-extra-objects 20)
run "$PYTHON" score_images.py -g "$OUT" -p "$OUT/blip2_post.json" --detector "$MODELS/owlv2" --clip-model "$MODELS/clip" --device cpu \
    "${DEMO_ONLY_THRESHOLDS[@]}"

step "stage 3: draw the boxes and the review page (draws only what is missing)"
run "$PYTHON" draw_bboxes.py -g "$OUT" -p "$OUT/blip2_post.json" -i "$SAMPLE/images" -o "$OUT/boxes"

step "stage 4: keep the good pictures (the demo keeps every one)"
# A user picks in $OUT/boxes/review.html and passes its picks.json with --picks (docs/review.md), or
# copies the pictures worth keeping from the review folder, names and mode folders unchanged, as here.
copied=0
for mode in generation inpainting; do
    mkdir -p "$OUT/picked/$mode"
    for picture in "$OUT/boxes/$mode"/*.png; do
        if [[ ! -e "$OUT/picked/$mode/${picture##*/}" ]]; then
            cp "$picture" "$OUT/picked/$mode/"
            copied=$((copied + 1))
        fi
    done
done
echo "copied $copied pictures from $OUT/boxes/<mode>/ into $OUT/picked/<mode>/"
if stale "$OUT/final/annotations.json" "$OUT/picked" "$OUT/generation" "$OUT/inpainting"; then
    overwrite=()
    [[ -f "$OUT/final/annotations.json" ]] && overwrite=(--overwrite)
    run "$PYTHON" finalize_selected_images.py -a "$SAMPLE/annotations.json" \
        --images "$SAMPLE/images" -g "$OUT" --picked "$OUT/picked" -p "$OUT/blip2_post.json" \
        -o "$OUT/final" --merge --yolo ${overwrite[@]+"${overwrite[@]}"}
else
    echo "reusing $OUT/final: nothing picked or generated since it was written"
fi

step "stage 5: fine-tune a tiny detector on the result, beside a control run on the real images alone"
# A few iterations of a small torchvision detector from random weights at 64 to 96 pixels: the demo shows the
# runs, the report and the plot, not a better detector. Validation: the sample set's real images.
if [[ ! -f "$OUT/finetune/report.json" || "$OUT/final/annotations.json" -nt "$OUT/finetune/report.json" ]]; then
    overwrite=()
    [[ -d "$OUT/finetune/runs" ]] && overwrite=(--overwrite)
    run "$PYTHON" finetune_detector.py -d "$OUT/final" --val-annotations "$SAMPLE/annotations.json" \
        --val-images "$SAMPLE/images" -o "$OUT/finetune" --model fasterrcnn_mobilenet_v3_large_320_fpn \
        --min-size 64 --max-size 96 --model-option box_batch_size_per_image=64 --model-option rpn_pre_nms_top_n_train=300 \
        --model-option rpn_post_nms_top_n_train=300 --max-iters 2 --batch-size 2 --warmup-iters 1 --control \
        --sampling dcl --num-workers 0 --device cpu ${overwrite[@]+"${overwrite[@]}"}
else
    echo "reusing $OUT/finetune: the final set has not changed since"
fi

step "FID between the sample images and the picked pictures (random Inception weights)"
if [[ ! -f "$OUT/fid.json" || "$OUT/final/annotations.json" -nt "$OUT/fid.json" ]]; then
    overwrite=()
    [[ -f "$OUT/fid.json" ]] && overwrite=(--overwrite)
    # --dims 64: a dozen images cannot fill 2048 dimensions anyway, and the square root of a
    # 2048x2048 matrix is slow on CPU. Expect the warning about fewer images than dimensions.
    run "$PYTHON" evaluate_fid.py -r "$SAMPLE/images" -g "$OUT/final/images/generated" --weights "$FID_WEIGHTS" \
        --dims 64 --device cpu --num-workers 0 -o "$OUT/fid.json" ${overwrite[@]+"${overwrite[@]}"}
else
    echo "reusing $OUT/fid.json: the final set has not changed since"
fi

step "output tree"
"$PYTHON" - "$DEMO_DIR" <<'EOF'
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def show(folder: Path, depth: int, name: str):
    """One line per folder: its files by name, images counted; model folders are not opened."""
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    folders = [p for p in entries if p.is_dir()]
    files = [p.name for p in entries if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES]
    images = sum(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in entries)
    if folder.name == "models":
        files, folders = [p.name + "/" for p in folders], []
    parts = files + ([f"{images} image{'s' * (images > 1)}"] if images else [])
    print(f"{'  ' * depth + name + '/':<30}{'  '.join(parts)}".rstrip())
    for sub in folders:
        show(sub, depth + 1, sub.name)


show(Path(sys.argv[1]), 0, sys.argv[1].rstrip("/"))
EOF

step "summary"
"$PYTHON" - "$DEMO_DIR" <<'EOF'
import json
import sys
from pathlib import Path

from cocoaug.finetune_report import summary_lines
from cocoaug.images import image_size

demo = Path(sys.argv[1])
sample, out = demo / "sample", demo / "out"
original = json.loads((sample / "annotations.json").read_text())
records = json.loads((out / "blip2_post.json").read_text())
final = json.loads((out / "final" / "annotations.json").read_text())
merged = json.loads((out / "final" / "train_augmented.json").read_text())
fid = json.loads((out / "fid.json").read_text())
size_of = {image["id"]: (image["width"], image["height"]) for image in original["images"]}

print(f"stage 1  {len(records)} of {len(original['images'])} sample images selected and captioned -> {out}/blip2_post.json")
for record in records[:2]:
    caption = record["generated_text"]
    print(f"           image {record['image_id']} ({record['label']}): \"{caption[:60] + '...' * (len(caption) > 60)}\"")
for mode in ("generation", "inpainting"):
    manifest = [json.loads(line) for line in (out / mode / "manifest.jsonl").read_text().splitlines()]
    same = sum(image_size(out / mode / e["file_name"]) == size_of[e["source_image_id"]] for e in manifest)
    print(f"stage 2  {mode:<11} {len(manifest)} pictures, {same} of them the size of their original")
picks = json.loads((out / "picks_passed.json").read_text())
scored = sum(len((out / mode / "scores.jsonl").read_text().splitlines()) for mode in ("generation", "inpainting"))
print(f"scores   {len(picks['picks'])} of {scored} pictures pass the demo-only thresholds -> {out}/picks_passed.json, score_summary.csv "
      "(random weights: with the real defaults none would)")
overviews = len(list((out / "boxes" / "overview").glob("*.png")))
print(f"stage 3  boxed copies in {out}/boxes/<mode>/, {overviews} overviews: open {out}/boxes/overview/")
print(f"         review page: open {out}/boxes/review.html in a browser (? shows the keys), or serve it with")
print(f"         draw_bboxes.py ... --serve to save each decision to {out}/boxes/picks.json (docs/review.md)")
generated = [image for image in final["images"] if "source_image_id" in image]
print(f"stage 4  annotations.json: {len(final['images']) - len(generated)} originals + {len(generated)} generated images, "
      f"{len(final['annotations'])} boxes")
print(f"         train_augmented.json: {len(original['images'])} original + {len(merged['images']) - len(original['images'])} "
      f"generated images, {len(original['annotations'])} -> {len(merged['annotations'])} boxes")
report = json.loads((out / "finetune" / "report.json").read_text())
print(f"stage 5  {summary_lines(report)[-1]} (random weights, 2 iterations: it shows the runs, not a gain)")
print(f"         plot: open {out}/finetune/per_class_ap.png; per category: {out}/finetune/per_class_ap.csv")
print(f"FID      {fid['fid']:.4f} (dims {fid['dims']}; {fid['n_real']} real, {fid['n_generated']} generated; random "
      "weights: it shows the check runs, not quality)")
print(f"\nREADME.md runs the same steps with the real models. Delete {demo} to start the demo afresh.")
EOF
