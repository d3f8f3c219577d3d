#!/usr/bin/env bash
# GPU checks in one short run (well under 8 minutes on one H100): CFGAN iZP for a few epochs at
# precision 32 / bf16-mixed / 16-mixed; with 2+ GPUs a 2-GPU DDP run of a trained row (CFGAN),
# a closed-form row (EASE^R) and an exact-solve row (iALS), each beside its 1-GPU run; and the
# evaluation throughput at ML-20M shape. Prints one JSON object.
#   ADVREC_DATA_DIR=/path/with/cfgan-splits bash bench/gpu_check.sh
# Without the CFGAN split it falls back to synthetic data of the same shape.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-$(mktemp -d)}/gpu_check
mkdir -p "$OUT_DIR"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
EPOCHS=${EPOCHS:-20}
if [ -f "${ADVREC_DATA_DIR:-data}/cfgan-splits/ML100K/ML100K.train" ]; then
  DATA=(experiment=cfgan_ml100k_paper)
  PLAIN=(data=cfgan_ml100k)
else
  SHAPE=(data=synthetic data.source.n_users=943 data.source.n_items=1653
         data.source.n_interactions=100000)
  DATA=(experiment=cfgan_ml100k_paper "${SHAPE[@]}")
  PLAIN=("${SHAPE[@]}")
fi
N_GPUS=$(python -c "import torch; print(torch.cuda.device_count())")

run() {  # name, extra overrides...
  local name=$1; shift
  local t0=$SECONDS
  if timeout 150 python -m advrec.train "${DATA[@]}" trainer.max_epochs="$EPOCHS" logger=csv \
      hydra.run.dir="$OUT_DIR/$name" "$@" > "$OUT_DIR/$name.log" 2>&1; then
    python - "$OUT_DIR/$name/metrics.json" "$name" $((SECONDS - t0)) <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({"run": sys.argv[2], "wall_s": int(sys.argv[3]), "epochs": m["epochs"],
                  "ndcg@20": round(m["test/ndcg@20"], 4),
                  "precision@20": round(m["test/precision@20"], 4)}))
PY
  else
    echo "{\"run\": \"$name\", \"error\": \"see $OUT_DIR/$name.log\"}"
  fi
}

{
  for p in 32-true bf16-mixed 16-mixed; do run "gpu_$p" trainer=gpu trainer.precision=$p; done
  if [ "$N_GPUS" -ge 2 ]; then
    run ddp_2gpu trainer=ddp trainer.devices=2
    for m in ease ials; do  # closed-form and exact rows: 2 GPUs must give the 1-GPU numbers
      DATA=("${PLAIN[@]}" model=$m protocol=validated) run "gpu_1_$m" trainer=gpu
      DATA=("${PLAIN[@]}" model=$m protocol=validated) run "ddp_2gpu_$m" trainer=ddp \
        trainer.devices=2
    done
  fi
  python - <<'PY'
import json, time, torch
from advrec.metrics import RankingMetrics
n_users, n_items, bs = 138_493, 26_744, 4096
metric = RankingMetrics((5, 10, 20), n_items=n_items).cuda()
g = torch.Generator(device="cuda").manual_seed(0)
torch.cuda.synchronize(); t = time.perf_counter()
for lo in range(0, n_users, bs):
    b = min(bs, n_users - lo)
    scores = torch.rand(b, n_items, device="cuda", generator=g)
    target = torch.rand(b, n_items, device="cuda", generator=g) < 0.005
    metric.update(scores, target)
metric.compute(); torch.cuda.synchronize()
s = time.perf_counter() - t
print(json.dumps({"run": "eval_ml20m_shape", "seconds": round(s, 3),
                  "users_per_s": round(n_users / s), "device": torch.cuda.get_device_name(),
                  "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}))
PY
} | python -c "import json,sys; print(json.dumps([json.loads(l) for l in sys.stdin if l.strip()], indent=2))"
