#!/usr/bin/env bash
# The one command to run when a CUDA GPU is at hand (BENCHMARKS.md): captioning (the seed's loop vs
# batched), generation (diffusers' pipeline vs the own sampler at batch 1, 4, 8) and scoring time per
# picture, with peak GPU memory, side by side in one run (benchmarks/gpu_suite.py). Writes
# benchmarks/results/gpu-<date>.md. Sized for under 8 minutes on one H100-class GPU, model build included.
#
#   bash benchmarks/gpu_suite.sh                       # builds full-size random models into full_size_models/
#   bash benchmarks/gpu_suite.sh --models DIR          # real models: DIR/blip2, gligen-generation, owlv2, clip
#   bash benchmarks/gpu_suite.sh --dry-run             # the same code at tiny size on the CPU (tiny models)
#
# --results DIR writes the results file there instead. PYTHON names the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
MODELS=""
RESULTS="benchmarks/results"
DRY_RUN=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --models) [[ $# -ge 2 ]] || { echo "error: --models needs a folder" >&2; exit 2; }; MODELS="$2"; shift 2 ;;
        --results) [[ $# -ge 2 ]] || { echo "error: --results needs a folder" >&2; exit 2; }; RESULTS="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -n "$MODELS" && ! -d "$MODELS" ]]; then
    echo "error: --models folder not found: $MODELS" >&2
    exit 2
fi

if [[ $DRY_RUN == 1 ]]; then
    if [[ -z "$MODELS" ]]; then
        MODELS="$(mktemp -d)/tiny_models"
        "$PYTHON" scripts/make_tiny_models.py "$MODELS"
    fi
    exec "$PYTHON" benchmarks/gpu_suite.py --models "$MODELS" --results "$RESULTS" --device cpu --threads 1 --caption-images 3 \
        --caption-batch 2 --max-new-tokens 4 --images 2 --steps 2 --score-images 2 --label "bash benchmarks/gpu_suite.sh --dry-run"
fi

if [[ -z "$MODELS" ]]; then
    MODELS="full_size_models"
    # Built on the GPU (random initialisation there takes seconds); reused when already there.
    "$PYTHON" scripts/make_full_size_models.py "$MODELS" --only blip2,gligen-generation,owlv2,clip --device cuda
fi
"$PYTHON" benchmarks/gpu_suite.py --models "$MODELS" --results "$RESULTS" --device cuda --label "bash benchmarks/gpu_suite.sh $*"
