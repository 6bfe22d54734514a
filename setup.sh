#!/usr/bin/env bash
# Installs loopviz into ./.venv: Debian's graphviz when `dot` is missing, CPU torch, fastai (without
# torchvision/spacy) and loopviz itself; `--dev` adds the test tools. Safe to re-run: a second run with
# nothing changed only checks a stamp.
set -euo pipefail
cd "$(dirname "$0")"

dev=0
case "${1:-}" in
  --dev) dev=1 ;;
  "") ;;
  *) echo "usage: ./setup.sh [--dev]" >&2; exit 2 ;;
esac

if ! command -v dot >/dev/null 2>&1; then
  echo "setup.sh: installing Debian's graphviz (for the dot program)"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq graphviz >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

stamp=".venv/.setup-$(cat setup.sh pyproject.toml requirements/*.txt tests/mermaid/package*.json | sha1sum | cut -c1-12)-dev$dev"
if [ -f "$stamp" ]; then
  exit 0
fi

.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" install "torch==2.13.0"
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
rm -f .venv/.setup-*
touch "$stamp"
