#!/usr/bin/env bash
# A fold at LLaVA-1.5-7B's real size on a GPU (random weights, configs/llava15_7b_shapes.yaml): train 40 LoRA
# steps on fold 0 of a small generated data set, then the engine's throughput on the trained model.
#   bash bench/real_size.sh [python] [key=value overrides...]
# The same flow scaled down, to check the script on a CPU:
#   bash bench/real_size.sh .venv/bin/python model.tiny.text_hidden=64 model.tiny.text_layers=1 ...
set -euo pipefail
PY=${1:-python}
shift || true
CONFIG=configs/llava15_7b_shapes.yaml
SHAPES=()
for s in "$@"; do SHAPES+=(--set "$s"); done
SETS=(--set data.root=data/real_size --set workdir=bench_out "${SHAPES[@]}")
FOLD=bench_out/experiments/llava15_7b_shapes/fold0
$PY -m competition data --out data/real_size --train-images 600 --test-images 20
$PY -m competition folds -c $CONFIG "${SETS[@]}"
start=$(date +%s)
$PY -m competition train -c $CONFIG --fold 0 "${SETS[@]}"
echo "train: $(($(date +%s) - start)) s wall, model build and save included"
cat $FOLD/train_metrics.json
$PY bench/predict_throughput.py --config $CONFIG --model $FOLD/model --questions "${QUESTIONS:-160}" \
  --batch-size "${BATCH:-32}" "${SHAPES[@]}"
