#!/usr/bin/env bash
# Everything GPU-related in one run (issue 19), for a machine with a CUDA device:
#   1. the `gpu` tests (engine on the GPU vs our CPU and vs the original code on the same GPU);
#   2. benchmarks/run_all.py --device cuda (ours, the original and transformers on the GPU).
# Output goes to $OUT (default ./gpu-check-out): nvidia-smi.txt, gpu-tests.txt, run_all-cuda.txt.
#
#   bash scripts/gpu_check.sh                # with the project's .venv (pip install -e ".[test]")
#   PY=python3 bash scripts/gpu_check.sh     # another interpreter (PYTHONPATH=src if not installed)
#   QUICK=1 bash scripts/gpu_check.sh        # run_all --quick (fewer repeats, no full-bank rows)
#
# The GPU machine lent to this project lacks some test dependencies (pycocotools, zarr, av,
# edgetam-dimos and hydra-core/omegaconf/antlr4 4.9.3/iopath): carry them as wheels, see
# ../shared/ENVIRONMENT.md ("The lent GPU machine"). Exit status: the tests' (run_all still runs).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-gpu-check-out}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not found" > "$OUT/nvidia-smi.txt"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" \
    || { echo "gpu_check: no CUDA device visible to $PY" >&2; exit 2; }
"$PY" -m pytest -m gpu -q -p no:cacheprovider -rs tests/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.txt"
rc=${PIPESTATUS[0]}
"$PY" benchmarks/run_all.py --device cuda ${QUICK:+--quick} 2>&1 | tee "$OUT/run_all-cuda.txt"
echo "gpu_check: tests exit $rc; results in $OUT"
exit "$rc"
