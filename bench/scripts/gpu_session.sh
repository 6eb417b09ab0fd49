#!/usr/bin/env bash
# One device session: GPU benchmarks (sampling, throughput, a short speed run) then the tuning sweep.
# Run from the repository root on the GPU machine with the wheels of .whl/ carried; writes to $OUT.
# Usage: bash bench/scripts/gpu_session.sh SPEED_BUDGET_MINUTES SWEEP_DEADLINE_MINUTES SWEEP_TIMEOUT_S
set -u
speed_budget=${1:-0.6}; sweep_minutes=${2:-3.5}; sweep_timeout=${3:-260}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi -L
python3 -c "import torch, diffusers, transformers, peft; print(torch.__version__, diffusers.__version__, transformers.__version__, peft.__version__)"
timeout 45 python3 -m studio.cli bench sampling --device cuda --out "$OUT/sampling_gpu.json"
timeout 75 python3 -m studio.cli bench throughput --preset shapes-geneval --device cuda --iterations 5 --out "$OUT/throughput_gpu.json"
# the same iteration with one model call per pass (the UNet is launch-bound on a GPU)
python3 -c "import dataclasses as d; from trainer_core.config import load_preset, dump_config; \
c = load_preset('shapes-geneval'); print(dump_config(d.replace(c, rollout=d.replace(c.rollout, batch_size=512))))" \
  > /tmp/geneval-batch512.yaml
timeout 75 python3 -m studio.cli bench throughput --config /tmp/geneval-batch512.yaml --device cuda --iterations 5 \
  --out "$OUT/throughput_gpu_batch512.json"
timeout 200 python3 -m studio.cli bench speed --budget-minutes "$speed_budget" --seeds 1 --marks 5 --device cuda --out /tmp/speed
cp /tmp/speed/* "$OUT/" 2>/dev/null
timeout "$sweep_timeout" python3 bench/scripts/sweep.py --grid bench/sweeps/geneval-gpu.yaml --out /tmp/sweep \
  --parallel 15 --deadline-minutes "$sweep_minutes" 2>&1 | grep -v -e Loading -e '%|'
tar czf "$OUT/sweep.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude=samples -C /tmp sweep
