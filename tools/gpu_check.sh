#!/usr/bin/env bash
# One run on a GPU machine that reaches no package registry (the `device` tool):
# build llama-cpp-python with CUDA, write a LLaVA-1.5-7B-shaped random pair,
# quantize it to Q4_K_M, then `doctor`, `ask`, `bench` and `bench --parallel 4`.
# Brings its own packages: .whl/ (Python 3.12 wheels of what that machine lacks)
# and .sdist/llama_cpp_python-*.tar.gz (trimmed sdist); see BENCHMARKS.md "On a GPU".
# Output: stdout, and the logs and JSON under $OUT.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT" /tmp/m
export PYTHONUNBUFFERED=1
T0=$(date +%s); stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/stamps.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/lcp:/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1
lscpu | grep -m1 'Model name'; echo "amx_tile cpus: $(grep -c amx_tile /proc/cpuinfo)"
stamp "building llama-cpp-python (GGML_CUDA, sm_90) in the background"
( CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 ${EXTRA_CMAKE:-}" CMAKE_BUILD_PARALLEL_LEVEL=16 \
  python3 -m pip install --no-deps --no-build-isolation --no-cache-dir --target /tmp/lcp .sdist/llama_cpp_python-*.tar.gz \
  > "$OUT/build.log" 2>&1; echo "build rc=$?" >> "$OUT/build.log" ) &
BUILD=$!
stamp "writing the LLaVA-1.5-7B-shaped pair (F16)"
python3 -m bot.engine.tiny --shape llava7b --dir /tmp/m > /tmp/m/paths.txt || exit 1
F16=$(sed -n 1p /tmp/m/paths.txt); MMPROJ=$(sed -n 2p /tmp/m/paths.txt); ls -la /tmp/m
stamp "pair written; waiting for the build"
wait $BUILD; tail -2 "$OUT/build.log"; grep -q "build rc=0" "$OUT/build.log" || exit 1
stamp "built"
M=/tmp/m/llava7b-Q4_K_M.gguf
python3 - "$F16" "$M" <<'PY' || exit 1
import sys, time, llama_cpp
print("llama_supports_gpu_offload:", llama_cpp.llama_supports_gpu_offload())
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
p.nthread = 16
t = time.perf_counter()
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p)
print(f"quantize rc={rc} in {time.perf_counter() - t:.1f} s")
PY
ls -la "$M"; stamp "quantized"
A=(--model "$M" --mmproj "$MMPROJ")
echo "ulimit -s: $(ulimit -s)"; python3 -c "import resource; print('RLIMIT_STACK', resource.getrlimit(resource.RLIMIT_STACK))"
# the bot loads and generates in worker threads; BIGSTACK runs it with 64 MB thread stacks
BOT=(python3 -X faulthandler -m bot)
BIGSTACK=(python3 -X faulthandler -c "import threading, runpy, sys; threading.stack_size(64 << 20); sys.argv[0] = 'llava-bot'; runpy.run_module('bot', run_name='__main__')")
timeout 60 "${BOT[@]}" ask bot/assets/example.jpg "What is in this picture?" --max-tokens 54 "${A[@]}" > "$OUT/ask.txt" 2>&1
echo "ask rc=$?"; tail -4 "$OUT/ask.txt"; stamp "ask done"
if ! grep -q "⏱" "$OUT/ask.txt"; then
  BOT=("${BIGSTACK[@]}")
  timeout 60 "${BOT[@]}" ask bot/assets/example.jpg "What is in this picture?" --max-tokens 54 "${A[@]}" > "$OUT/ask-bigstack.txt" 2>&1
  echo "ask (64 MB thread stacks) rc=$?"; tail -4 "$OUT/ask-bigstack.txt"; stamp "ask (big stacks) done"
fi
timeout 70 "${BOT[@]}" bench --parallel 4 --max-tokens 64 --json "${A[@]}" > "$OUT/parallel.json" 2> "$OUT/parallel.err"; echo "parallel rc=$?"
python3 -c "import json,sys; from bot.bench.parallel import table; print(table(json.load(open(sys.argv[1]))))" "$OUT/parallel.json" || tail -5 "$OUT/parallel.err"; stamp "parallel done"
timeout ${BENCH_S:-80} "${BOT[@]}" bench --requests 4 --json "${A[@]}" > "$OUT/bench.json" 2> "$OUT/bench.err"; echo "bench rc=$?"
python3 -c "import json,sys; from bot.bench.run import table; print(table(json.load(open(sys.argv[1]))))" "$OUT/bench.json" || tail -5 "$OUT/bench.err"; stamp "all done"
