#!/usr/bin/env bash
# Create the Python environment of the PyTorch anchor benchmark: a venv at target/pytorch-venv (git-ignored)
# with torch and numpy from PyPI. Idempotent: an environment that already imports torch is left alone.
#
#   bash benches/pytorch/setup.sh          # create or reuse
#   HST_TORCH_VENV=/elsewhere bash benches/pytorch/setup.sh
#
# Only the default PyPI index is reachable here, and PyPI's torch for linux x86_64 is the CUDA build: pip pulls
# the nvidia-* runtime wheels with it (about 3 GiB installed, a couple of minutes). The CUDA build runs on a
# CPU-only machine as the CPU build does (the CUDA kernels are simply not used). Where the PyTorch CPU index is
# reachable, set HST_TORCH_INDEX_URL to it for a ~200 MiB install instead.
# Pin a version with HST_TORCH_SPEC (default: torch, i.e. the newest release).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${HST_TORCH_VENV:-$ROOT/target/pytorch-venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${HST_TORCH_SPEC:-torch}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch, numpy" >/dev/null 2>&1; then
    echo "setup: $VENV already has torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')" >&2
    exit 0
fi

echo "setup: creating $VENV" >&2
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --no-input)
if [ -n "${HST_TORCH_INDEX_URL:-}" ]; then
    "${PIP[@]}" --index-url "$HST_TORCH_INDEX_URL" "$TORCH_SPEC"
else
    "${PIP[@]}" "$TORCH_SPEC"
fi
"${PIP[@]}" numpy
"$VENV/bin/python" - <<'PY'
import torch
print(f"setup: torch {torch.__version__}, {torch.get_num_threads()} threads, "
      f"CUDA build {torch.version.cuda or 'no'}")
x = torch.randn(64, 64)
assert torch.isfinite(x @ x).all()
PY
