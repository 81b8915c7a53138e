#!/usr/bin/env bash
# Wheels for an offline GPU machine (see scripts/gpu_check.sh): run where there is internet and the project's
# Python environment is installed; writes .whl/ (git-ignored) with every package the GPU check imports, pinned to
# the versions installed here, built for the target Python (default cp312, manylinux x86_64). torch and numpy are
# left out: the GPU machine's own are used.
#
#     bash scripts/gpu_wheels.sh              # -> .whl/ for CPython 3.12
#     PYVER=3.11 bash scripts/gpu_wheels.sh   # another target Python
#     WITH_OPENCV=1 bash scripts/gpu_wheels.sh   # + opencv-python-headless (~50 MB; the cache section's flow timing)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
ver="${PYVER:-3.12}"
abi="cp${ver/./}"
roots="diffusers transformers kornia sentencepiece einops safetensors tqdm"
[[ "${WITH_OPENCV:-0}" == 1 ]] && roots="$roots opencv-python-headless"

# the installed dependency closure of the roots (markers evaluated for the target Python), pinned
pins=$("$py" - "$ver" $roots <<'EOF'
import importlib.metadata as md
import sys
from packaging.markers import default_environment
from packaging.requirements import Requirement
ver, todo = sys.argv[1], sys.argv[2:]
env = dict(default_environment(), python_version=ver, python_full_version=ver + ".0", extra="")
seen = {}
while todo:
    name = todo.pop()
    key = name.lower().replace("_", "-")
    if key in seen or key in ("torch", "numpy", "triton") or key.startswith("nvidia-"):
        continue
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        sys.exit(f"{name} is not installed here: bash scripts/setup.sh first")
    seen[key] = dist.version
    for r in dist.requires or []:
        req = Requirement(r)
        if req.marker is None or req.marker.evaluate(env):
            todo.append(req.name)
print(" ".join(f"{k}=={v}" for k, v in sorted(seen.items())))
EOF
)
echo "gpu_wheels: $pins" >&2
mkdir -p .whl
"$py" -m pip download --only-binary=:all: --no-deps --python-version "$ver" --implementation cp --abi "$abi" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 -d .whl $pins
du -sh .whl
