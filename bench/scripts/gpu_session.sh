#!/usr/bin/env bash
# One device session: the GPU throughput benchmark, then a tuning sweep. Run from the repository root on the
# GPU machine with the wheels of .whl/ carried (diffusers is not in its image); writes to $OUT.
# Usage: bash bench/scripts/gpu_session.sh GRID SWEEP_DEADLINE_MINUTES SWEEP_TIMEOUT_S [PARALLEL]
# Session 10: bash bench/scripts/gpu_session.sh bench/sweeps/geneval-gpu-2.yaml 6.6 440 7
set -u
grid=$1; sweep_minutes=$2; sweep_timeout=$3; parallel=${4:-7}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi -L
python3 -c "import torch, diffusers, transformers, peft; print(torch.__version__, diffusers.__version__, transformers.__version__, peft.__version__)"
# one model call per pass: the 4M-parameter UNet is launch-bound on a GPU
python3 -c "import dataclasses as d; from trainer_core.config import load_preset, dump_config; \
c = load_preset('shapes-geneval'); print(dump_config(d.replace(c, rollout=d.replace(c.rollout, batch_size=512))))" \
  > /tmp/geneval-batch512.yaml
timeout 70 python3 -m studio.cli bench throughput --config /tmp/geneval-batch512.yaml --device cuda --iterations 5 \
  --out "$OUT/throughput_gpu_batch512.json" 2>&1 | grep -v -e Loading -e '%|'
timeout "$sweep_timeout" python3 bench/scripts/sweep.py --grid "$grid" --out /tmp/sweep --parallel "$parallel" \
  --deadline-minutes "$sweep_minutes" --seeds 6 --eval-batch 612 2>&1 | grep -v -e Loading -e '%|'
tar czf "$OUT/sweep.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude=samples -C /tmp sweep
