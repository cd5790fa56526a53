#!/usr/bin/env bash
# DCN-v2 and DeepFM through the whole demo path on MovieLens-100K with the CLI a user runs:
#   demo (train, export, build every CPU variant and the ensembles, serve on the bundled Triton,
#   served AUC next to offline, verify) -> compress (default recipe, 99% AUC budget) -> build the
#   compressed model -> one perf sweep of it (perf_analyzer, gRPC, concurrency 1 and 4).
# Results: perf/results/architectures_path.md (numbers copied from the logs this writes).
#   bash perf/architectures_path.sh [WORKDIR]    # default /tmp/tritonrec-architectures; ~4 min on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/tritonrec
W=${1:-/tmp/tritonrec-architectures}
for a in dcnv2 deepfm; do
  rm -rf "$W/$a" && mkdir -p "$W/$a"
  $T demo --model $a --workdir "$W/$a/work" --repository "$W/$a/repo" > "$W/$a/demo.log" 2>&1
  $T compress "$W/$a/work/checkpoint" --out "$W/$a/compressed" > "$W/$a/compress.log" 2>&1
  $T build --checkpoint "$W/$a/compressed/checkpoint" --onnx "$W/$a/compressed/model.onnx" --repository "$W/$a/repo_c" \
    --model-name ${a}_c --variant onnx_python --no-ensembles > "$W/$a/build.log" 2>&1
  $T perf "$W/$a/repo_c" --model ${a}_c_onnx_python --protocol grpc --concurrency 1,4 \
    --checkpoint "$W/$a/compressed/checkpoint" --out "$W/$a/perf.json" > "$W/$a/perf.log" 2>&1
  echo "$a: $W/$a/work/demo_report.md, $W/$a/compress.log, $W/$a/perf.md"
done
