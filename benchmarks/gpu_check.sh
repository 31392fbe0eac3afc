#!/usr/bin/env bash
# GPU checks and GPU benchmark figures, run on a CUDA machine from the repository root:
#   bash benchmarks/gpu_check.sh            (logs go to $OUT when set, else ./gpu_logs)
# Needs python3 with torch (CUDA), numba, scipy, networkx, torchdiffeq, safetensors, tqdm,
# pytest (+ pytest-xdist); dysts may come from a folder on EXTRA_PYTHONPATH (it is only imported
# by dsrecon.systems). Installs nothing from the network.
set -u
LOG=${OUT:-gpu_logs}; mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${EXTRA_PYTHONPATH:-}"
nvidia-smi -L
python3 -c "import torch, numba; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'numba', numba.__version__)"
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
echo "== gpu-marked tests (the opt-in CUDA-graph rollout included: tests/training/test_cuda_rollout.py)"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$LOG/gpu_tests.log" | tail -15
echo "== selective scan / Mamba / LSSL on cuda"
timeout 150 python3 benchmarks/bench_ssm.py --device cuda --repeats 3 2>&1 | tee "$LOG/bench_ssm_cuda.log"
echo "== ensemble training throughput, cpu vs cuda"
timeout 240 python3 benchmarks/bench_training_device.py --devices cuda --K 16 128 --epochs 4 --graphs 2>&1 | tee "$LOG/bench_training_device.log"
echo "== default test suite with CUDA present"
timeout 200 python3 -m pytest -q -p no:cacheprovider -x -n 8 tests 2>&1 | tee "$LOG/tests_all.log" | tail -15
