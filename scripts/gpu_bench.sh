#!/usr/bin/env bash
# The GPU benchmark for short device windows (about 5 minutes on an H100): installs nothing,
# needs a python3 with CUDA PyTorch, NumPy, OpenCV, safetensors and PyYAML; run it from the
# repository root. Writes bench_paper.json/.txt (paper configurations, 640x480), bench_cpu.json/.txt
# (the CPU configurations on the GPU) and gpu.txt into OUT_DIR. Extra arguments go to both
# `dl-perception bench` runs. DEVICE (default cuda) and FRAMES (default 64) may be overridden.
set -euo pipefail
out=${1:?usage: scripts/gpu_bench.sh OUT_DIR [bench arguments]}
shift
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
device=${DEVICE:-cuda}
frames=${FRAMES:-64}
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')" | tee "$out/gpu.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >>"$out/gpu.txt" 2>/dev/null || true
timeout 300 python3 -m dl_perception.cli bench --preset paper --device "$device" --frames "$frames" \
    --batch-size 16 --json "$out/bench_paper.json" "$@" | tee "$out/bench_paper.txt"
timeout 150 python3 -m dl_perception.cli bench --preset cpu --device "$device" --frames "$frames" \
    --batch-size 16 --json "$out/bench_cpu.json" "$@" | tee "$out/bench_cpu.txt"
