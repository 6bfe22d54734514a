#!/usr/bin/env bash
# The GPU machine's session, from the repo root: install the wheels in .whl (benchmarks/gpu_wheels.txt says how to
# rebuild them) into /tmp/site, prove the install on CPU-safe tests, then run tests/test_gpu.py and
# benchmarks/gpu_check.py. Every step runs whatever the ones before did; the exit status is the last failure's.
# Logs and JSON go to $OUT (default /tmp/gpu_out). pytest runs with -o addopts=... because pyproject's addopts
# asks for nbmake, which is not installed there.
#   bash benchmarks/gpu_session.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/site:$PWD"
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
status=0
# step LOG COMMAND...: run it (its output also to LOG unless LOG is -), note a failure and go on
step() {
    local log=$1; shift; echo "== $*"
    if [ "$log" = - ]; then "$@"; else "$@" 2>&1 | tee "$log"; fi
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then echo "== failed ($rc): $*"; status=$rc; fi
}

ls .whl/*.whl >/dev/null || { echo "no .whl/*.whl here: see benchmarks/gpu_wheels.txt"; exit 2; }
if python3 -m pip --version >/dev/null 2>&1; then
    step - python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
else  # no pip: the wheels are zip files, and none of them needs more than unpacking
    step - python3 -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall("/tmp/site") for w in sys.argv[1:]]' \
        .whl/*.whl
fi
step - nvidia-smi -L
step - python3 -c 'import torch, fastai, loopviz; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "available", torch.cuda.is_available(), "| fastai", fastai.__version__, "| loopviz", loopviz.__version__)'
PYTEST=(python3 -m pytest -q -rs -p no:cacheprovider -o "addopts=--strict-markers")
step - "${PYTEST[@]}" -x tests/test_trace_clock.py tests/test_trace_fastai.py tests/test_trace_waits.py
step "$OUT/gpu_tests.log" "${PYTEST[@]}" -s tests/test_gpu.py tests/test_gpu_waits.py
step "$OUT/gpu_check.log" python3 benchmarks/gpu_check.py --json "$OUT/gpu_check.json" --merged "$OUT/merged.json.gz" \
    --save-traces "$OUT"
echo "== done in ${SECONDS} s, status $status; logs in $OUT"
exit "$status"
