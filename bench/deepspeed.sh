#!/usr/bin/env bash
# The same LoRA steps at LLaVA-1.5-7B's shapes (configs/llava15_7b_shapes.yaml, random weights) without DeepSpeed,
# with ZeRO-2 and with ZeRO-3, one GPU each through torchrun: time, peak memory, and how far the adapters the three
# runs saved lie apart (the same steps from the same start should agree to bf16 rounding).
#   bash bench/deepspeed.sh [python] [steps]      (RUNS="none zero3" for some of them)
set -uo pipefail
PY=${1:-python}
STEPS=${2:-20}
CONFIG=configs/llava15_7b_shapes.yaml
WORK=${WORK:-bench_out}
SETS=(--set data.root=data/real_size --set workdir=$WORK --set train.max_steps=$STEPS
      --set train.eval_steps=$((STEPS / 2)) --set train.eval_questions=64)
$PY -m competition data --out data/real_size --train-images 600 --test-images 20 >/dev/null || exit 1
$PY -m competition folds -c $CONFIG "${SETS[@]}" >/dev/null || exit 1
for zero in ${RUNS:-none zero2 zero3}; do
  ds=()
  [ "$zero" != none ] && ds=(--set train.deepspeed=configs/deepspeed/$zero.json)
  start=$(date +%s)
  timeout "${LIMIT:-170}" $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m competition train \
    -c $CONFIG --fold 0 "${SETS[@]}" --set experiment=ds_$zero "${ds[@]}" >"${LOGS:-$WORK}/$zero.log" 2>&1
  echo "$zero: rc $? in $(($(date +%s) - start)) s wall"
  tail -3 "${LOGS:-$WORK}/$zero.log"
  cat "$WORK/experiments/ds_$zero/fold0/train_metrics.json" 2>/dev/null
  rm -rf "$WORK/experiments/ds_$zero/fold0/model/base" "$WORK/experiments/ds_$zero/fold0/trainer"  # 14 GB a run
done
$PY - "$WORK" <<'EOF'
"""Each run's adapter against the run without DeepSpeed: largest absolute difference and relative norm."""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

runs = {z: Path(sys.argv[1]) / f"experiments/ds_{z}/fold0/model/adapter_model.safetensors" for z in ("none", "zero2", "zero3")}
found = {z: load_file(str(p)) for z, p in runs.items() if p.is_file()}
print("adapters saved:", ", ".join(f"{z} ({sum(t.numel() for t in w.values()):,} values)" for z, w in found.items()))
if "none" in found:
    ref = found["none"]
    for z, w in found.items():
        if z != "none" and w.keys() == ref.keys():
            diff = max((w[k].float() - ref[k].float()).abs().max().item() for k in ref)
            rel = torch.stack([(w[k].float() - ref[k].float()).norm() / ref[k].float().norm().clamp_min(1e-12) for k in ref]).max()
            print(f"{z} vs none: max |diff| {diff:.3g}, largest relative difference of a tensor {rel.item():.3g}")
        elif z != "none":
            print(f"{z} vs none: different tensors ({len(w)} vs {len(ref)})")
EOF
