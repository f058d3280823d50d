#!/usr/bin/env bash
# The GPU checks of the performance work, in one script of under 8 minutes on one H200:
#   1. the tests that need CUDA (tests/test_gpu.py: the conformance kit on cuda, structured == dense,
#      bf16 products, a training run),
#   2. I-Con's clustering step at 4,096 and 16,384 rows (paper formula, dense, structured; bf16 head),
#   3. pmi's step under kl/tv/js/hellinger (and with p and q debiased),
#   4. one epoch over 1.28 M x 768 synthetic embeddings (ImageNet with a frozen DINO ViT-B, in size),
#   5. embed throughput: a randomly initialised ViT-B/14 at 224 px in bf16, the model alone and `icon-bench embed`.
# Figures go to stdout and to $OUT/gpu_check.log when OUT is set.
#
#   bash benchmarks/gpu_check.sh                 # on a CUDA machine
#   bash benchmarks/gpu_check.sh --device cpu    # the same steps at small sizes, to try the script on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda
[ "${1:-}" = "--device" ] && device="${2:?--device needs cpu or cuda}"
log="${OUT:-/tmp}/gpu_check.log"
export PYTHONUNBUFFERED=1
run() { echo "+ $*" | tee -a "$log"; "$@" 2>&1 | tee -a "$log"; }
: >"$log"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee -a "$log"
if [ "$device" = cuda ]; then
  run python -m pytest -q -p no:cacheprovider tests/test_gpu.py
  run python benchmarks/bench_icon_step.py --device cuda --rows 4096 16384 --reps 10 --dtype bf16
  run python benchmarks/bench_icon_step.py --device cuda --rows 16384 --reps 10 --paths structured
  run python benchmarks/bench_pmi_step.py --device cuda --anchors 4096 --clusters 100 --repeats 10
  run python benchmarks/bench_pmi_step.py --device cuda --anchors 2048 --clusters 100 --repeats 5 --debias 0.6
  run python benchmarks/bench_epoch.py --device cuda --rows 1280000 --dim 768 --classes 1000
  run python benchmarks/bench_embed.py --device cuda --batch 256 --reps 10 --images 8192 --workers 8
else
  ICON_BENCH_TEST_DEVICE=cpu run python -m pytest -q -p no:cacheprovider tests/test_gpu.py
  run python benchmarks/bench_icon_step.py --device cpu --rows 512 1024 --dim 64 --clusters 100 --reps 1
  run python benchmarks/bench_pmi_step.py --device cpu --anchors 256 --repeats 2
  run python benchmarks/bench_pmi_step.py --device cpu --anchors 128 --repeats 1 --debias 0.6
  run python benchmarks/bench_epoch.py --device cpu --rows 20000 --dim 64 --classes 20
  run python benchmarks/bench_embed.py --device cpu --dim 64 --depth 1 --batch 16 --reps 2 --images 48 --workers 2
fi
echo "gpu_check: done ($device); log in $log"
