#!/usr/bin/env bash
# Installs loopviz into ./.venv: Debian's graphviz when `dot` is missing, torch 2.13.0, fastai (without
# torchvision/spacy) and loopviz itself; `--dev` adds the test tools, Hugging Face transformers and Lightning
# (the frameworks of the loopviz[transformers] and loopviz[lightning] adapters, so their tests run) and
# Debian's chromium when it is missing (the tests render HTML and Mermaid in headless Chromium). Safe to re-run: a second run with
# nothing changed only checks `dot` (with --dev, `chromium` too) and a stamp.
#
# torch: the CPU build (torch==2.13.0+cpu) when pip can find one, e.g. in a local wheel store (pip's
# find-links) or with PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu. PyPI itself has no CPU
# build for Linux x86_64, so otherwise this installs PyPI's torch==2.13.0, there the CUDA build (it runs
# on CPU too, but is several GB), and says so. A torch already in .venv is kept. Either way it prints
# the build .venv ends up with.
set -euo pipefail
cd "$(dirname "$0")"

dev=0
case "${1:-}" in
  --dev) dev=1 ;;
  "") ;;
  *) echo "usage: ./setup.sh [--dev]" >&2; exit 2 ;;
esac

debs=()
command -v dot >/dev/null 2>&1 || debs+=(graphviz)                  # the dot program
if [ "$dev" -eq 1 ] && ! command -v chromium >/dev/null 2>&1; then
  debs+=(chromium)                                                   # headless Chromium for the tests
fi
if [ "${#debs[@]}" -gt 0 ]; then
  echo "setup.sh: installing Debian's ${debs[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${debs[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

stamp=".venv/.setup-$(cat setup.sh pyproject.toml requirements/*.txt tests/mermaid/package*.json | sha1sum | cut -c1-12)-dev$dev"
if [ -f "$stamp" ]; then
  exit 0
fi

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if ! "${pip[@]}" install "torch==2.13.0+cpu" 2>/dev/null; then
    echo "setup.sh: no CPU build of torch 2.13.0 in reach; installing PyPI's torch==2.13.0 (on Linux x86_64, the CUDA build)" >&2
    "${pip[@]}" install "torch==2.13.0"
  fi
fi
grep -E '^fastai==' requirements/runtime.txt | xargs "${pip[@]}" install --no-deps
grep -vE '^(fastai==|#|$)' requirements/runtime.txt | xargs "${pip[@]}" install
"${pip[@]}" install --no-deps -e .
if [ "$dev" -eq 1 ]; then
  "${pip[@]}" install -r requirements/dev.txt
  # The official Mermaid parser, for the tests that check loopviz's Mermaid output (needs Node.js).
  if command -v npm >/dev/null 2>&1; then
    npm ci --prefix tests/mermaid --no-audit --no-fund --loglevel=error
  else
    echo "setup.sh: npm not found; the Mermaid syntax test will be skipped" >&2
  fi
fi
.venv/bin/python -c "import torch; v = torch.version; print('setup.sh: torch', torch.__version__,
  f'(CUDA {v.cuda})' if v.cuda else f'(ROCm {v.hip})' if getattr(v, 'hip', None) else '(CPU build)')"
rm -f .venv/.setup-*
touch "$stamp"
