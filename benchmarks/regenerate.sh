#!/usr/bin/env bash
# Regenerate every README figure: benchmarks/results/*.json and docs/*.png, in dependency order.
#
#   bash benchmarks/regenerate.sh [--out DIR] [--checkpoint CKPT] [--seeds] [--speed] [--gpu]
#                                 [--scv2-data DIR [--scv2-checkpoint CKPT]] [--scv2-large DIR] [--mutation]
#
# Always (measured at load average 10-15 on two shared cores: training 1.5-3 min, the rest of the main job
# 4 min, of which Lava 1.5 min; lmu_forms and mapping about 1 min each):
#   1. bench_main_job.py    train digits seed 0 (or reuse --checkpoint) -> export -> emulator -> Lava
#                           (40 samples) -> report (docs/energy_digits.png) -> stream
#                           (docs/stream_digits_{torch,emulator}.png); main_job.json
#   2. bench_lmu_forms.py   the LMU memory as delay taps vs recurrent on that checkpoint; lmu_forms.json
#   3. bench_mapping.py     placement of the seeded scv2 preset and that digits graph (docs/map_*.png)
#   4. bench_quantization.py  bit-width sweep on that checkpoint (keeps the JSON's fine-tuning part)
# Behind flags (long, or needing data or a GPU):
#   --seeds        bench_digits.py seeds 0/1/2 (the main job then reuses seed 0) and 3/4; bench_alignment.py
#                  and bench_quantization.py --finetune-seeds 1 on seeds 0-2 (long); seed 0 fine-tuned and
#                  run on Lava over the whole digits test split (bench_scv2_fidelity.py, digits_fidelity_lava.json)
#   --speed        bench_train.py --device cpu, bench_backends.py and --peer (Lava timings)
#   --gpu          bench_train.py --device cuda --batch 8,128 (needs CUDA)
#   --scv2-data D  bench_scv2_synthetic.py on a folder of shared/tools/make_fake_scv2.py (long);
#                  with --scv2-checkpoint C (trained as benchmarks/results/scv2_fidelity_train.toml)
#                  also bench_scv2_fidelity.py
#   --scv2-large D make D with make_fake_scv2.py --per-word 100 --seed 1 (3,500 clips; kept if D exists),
#                  train --recipe small --epochs 40 on it (9 min) and bench_scv2_fidelity.py on the result
#                  (the whole split on Lava, ~30 min; scv2_fidelity_big.json); the tool: $SCV2_TOOL or ../shared/tools
#   --mutation     bench_mutation.py files checkpoint emulator emulator_run (hours)
# Timings in the JSONs carry the load average: run on a quiet machine for speed figures.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
OUT="" CKPT="" SEEDS=0 SPEED=0 GPU=0 MUTATION=0 SCV2_DATA="" SCV2_CKPT="" SCV2_LARGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --checkpoint) CKPT=$2; shift 2 ;;
    --seeds) SEEDS=1; shift ;;
    --speed) SPEED=1; shift ;;
    --gpu) GPU=1; shift ;;
    --mutation) MUTATION=1; shift ;;
    --scv2-data) SCV2_DATA=$2; shift 2 ;;
    --scv2-checkpoint) SCV2_CKPT=$2; shift 2 ;;
    --scv2-large) SCV2_LARGE=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || OUT=$(mktemp -d)
mkdir -p "$OUT"
echo "runs in $OUT"
step() { echo; echo "== $*"; "$@"; }

CKPTS=()
if [ "$SEEDS" = 1 ]; then
  step $PY benchmarks/bench_digits.py --seeds 0 1 2 --out "$OUT/seeds"
  step $PY benchmarks/bench_digits.py --seeds 3 4 --out "$OUT/seeds" \
    --results benchmarks/results/digits_seeds34.json
  CKPTS=("$OUT/seeds/seed0/best.pt" "$OUT/seeds/seed1/best.pt" "$OUT/seeds/seed2/best.pt")
  [ -n "$CKPT" ] || CKPT="$OUT/seeds/seed0/best.pt"
fi
if [ -n "$CKPT" ]; then
  step $PY benchmarks/bench_main_job.py --checkpoint "$CKPT" --out "$OUT/main"
else
  step $PY benchmarks/bench_main_job.py --out "$OUT/main"
  CKPT="$OUT/main/best.pt"
fi
step $PY benchmarks/bench_lmu_forms.py --checkpoint "$CKPT"
step $PY -m lmuformer.cli export --to nir --preset scv2 --seed 0 -o "$OUT/scv2.nir"
step $PY benchmarks/bench_mapping.py --digits "$OUT/main/model.nir" --scv2 "$OUT/scv2.nir"
if [ "$SEEDS" = 1 ]; then  # the README quotes the three seeds: one checkpoint alone would replace them
  step $PY benchmarks/bench_alignment.py "${CKPTS[@]}"
fi
step $PY benchmarks/bench_quantization.py --checkpoint "$CKPT"
if [ "$SEEDS" = 1 ]; then
  step $PY benchmarks/bench_quantization.py --checkpoint "${CKPTS[@]}" --finetune-seeds 1 --skip-sweep
  step $PY benchmarks/bench_current_grid.py --checkpoint "${CKPTS[@]}"
  step $PY benchmarks/bench_scv2_fidelity.py --checkpoint "${CKPTS[0]}" --finetune-epochs 8 --lava-samples 360 \
    --out benchmarks/results/digits_fidelity_lava.json  # seed 0 fine-tuned, the whole split on Lava (~15 min)
fi
if [ "$SPEED" = 1 ]; then
  step $PY benchmarks/bench_train.py --device cpu --batch 8
  step $PY benchmarks/bench_backends.py
  step $PY benchmarks/bench_backends.py --peer
fi
if [ "$GPU" = 1 ]; then
  step $PY benchmarks/bench_train.py --device cuda --batch 8,128
fi
if [ -n "$SCV2_DATA" ]; then
  step $PY benchmarks/bench_scv2_synthetic.py --data-dir "$SCV2_DATA"
  if [ -n "$SCV2_CKPT" ]; then
    step $PY benchmarks/bench_scv2_fidelity.py --checkpoint "$SCV2_CKPT" --data-dir "$SCV2_DATA" \
      --finetune-epochs 2 --lava-samples 3
  fi
fi
if [ -n "$SCV2_LARGE" ]; then
  [ -d "$SCV2_LARGE" ] || step $PY "${SCV2_TOOL:-$ROOT/../shared/tools/make_fake_scv2.py}" "$SCV2_LARGE" \
    --per-word 100 --seed 1 --jobs 2
  step $PY -m lmuformer.cli train --dataset scv2 --data-dir "$SCV2_LARGE" --recipe small --epochs 40 \
    --out "$OUT/scv2_large" --no-progress
  step $PY benchmarks/bench_scv2_fidelity.py --checkpoint "$OUT/scv2_large/best.pt" --data-dir "$SCV2_LARGE" \
    --finetune-epochs 2 --lava-samples 350 --out benchmarks/results/scv2_fidelity_big.json
fi
if [ "$MUTATION" = 1 ]; then
  step $PY benchmarks/bench_mutation.py files checkpoint emulator emulator_run
fi
echo; echo "done: benchmarks/results/*.json and docs/*.png regenerated (runs in $OUT)"
