#!/usr/bin/env bash
# Installs PILA and what it needs on a CPU machine or a GPU node, without ever letting pip swap torch.
#   bash scripts/setup.sh            # runtime + training (the quick start)
#   bash scripts/setup.sh --test     # also the test tools (pytest, playwright + Debian chromium) and ComfyUI's deps
# torch: an installed torch is kept; otherwise `pip install torch==2.13.0` (on the CPU machines here this takes
# the CPU wheel that lies on disk). Every later install is constrained to the installed torch version.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install -q "torch==${PILA_TORCH_VERSION:-2.13.0}"
fi
TORCH_VERSION=$($PY -c "import torch; print(torch.__version__.split('+')[0])")
CONSTRAINTS=$(mktemp)
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"
EXTRAS="train"
if [[ "${1:-}" == "--test" ]]; then EXTRAS="train,test,comfyui"; fi
# the distribution was called comfyui-pila before it took its Registry name; two editable installs would both map pila
$PY -m pip uninstall -y -q comfyui-pila >/dev/null 2>&1 || true
$PY -m pip install -q -c "$CONSTRAINTS" -e ".[${EXTRAS}]"
# torchvision from PyPI is a CUDA build; on CPU torch `--no-deps` keeps it from pulling CUDA torch, and
# pila.compat defines the two ops it expects so that it imports.
if [[ "$EXTRAS" == *comfyui* ]]; then
  $PY -m pip install -q -c "$CONSTRAINTS" --no-deps "torchvision==0.28.0" || true
  if ! command -v chromium >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "setup: could not install chromium; browser tests will skip"
  fi
fi
rm -f "$CONSTRAINTS"
echo "setup: ok (torch ${TORCH_VERSION}, extras ${EXTRAS})"
