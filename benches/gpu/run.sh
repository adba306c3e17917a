#!/usr/bin/env bash
# Cross-backend benchmark table on a GPU machine: `cuda` and `wgpu`, from prebuilt release binaries.
#
# Usage:  benches/gpu/run.sh OUTDIR [--dry-run]
#
# Runs on a machine with an NVIDIA GPU, no Rust toolchain and no network, from the repository root or anywhere.
# The binaries are built elsewhere (x86-64 Linux, glibc >= the build machine's) and carried in the git-ignored
# folder gpu-bin/ (override with HST_GPU_BIN=DIR):
#
#   cargo build --release --features cuda,wgpu && mkdir -p gpu-bin && cp target/release/hst gpu-bin/hst-gpu
#
# or one binary per backend (each also contains the default `flex` CPU backend, the reference of the check):
#
#   cargo build --release --features cuda && cp target/release/hst gpu-bin/hst-cuda
#   cargo build --release --features wgpu && cp target/release/hst gpu-bin/hst-wgpu
#
# (`strip gpu-bin/hst-*` keeps them small enough to carry.) Libraries the GPU machine lacks may be carried in
# gpu-bin/lib (put on LD_LIBRARY_PATH), e.g. the Vulkan loader libvulkan.so.1; an ICD manifest can be given
# with VK_ICD_FILENAMES.
#
# What it does, within a budget of HST_BENCH_BUDGET seconds (default 450, i.e. under 8 minutes in all):
#   1. pre-flight: binaries start, `hst backends`, NVIDIA driver, libnvrtc (CUDA), Vulkan loader + NVIDIA ICD
#      (WGPU) — says clearly what is missing and skips that backend;
#   2. `hst bench --check`: the GPU backend against flex on the same weights and input (logits, every loss term,
#      logits after one Adam step; relative difference <= 1e-3) for `default` and `voc-small`;
#   3. `hst bench` for default, voc-small, paper, vg on cuda then wgpu, each configuration in its own process
#      under `timeout` (own peak RSS; nvidia-smi samples device memory), most important runs first;
#   4. the PyTorch anchor of voc-small (benches/pytorch/hst_anchor.py, the machine's torch) on the same GPU;
#   5. ratios.md (benches/gpu/ratios.py): train/infer per backend, WGPU vs CUDA, hst vs the anchor.
# Output in OUTDIR: ratios.md, results.md (Markdown table), anchor.jsonl, results.jsonl + results.json (one JSON object per backend x
# configuration), check.jsonl, check-<backend>.md, status.tsv (exit code and seconds of every run), machine.txt,
# run.log.
#
# --dry-run: the same script on CPU-only paths (flex binary: HST_BIN, default target/release/hst; tiny steps
# and shapes); the GPU pre-flight checks only report. Use it before spending GPU time.
set -uo pipefail

usage() { echo "usage: $0 OUTDIR [--dry-run]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1
shift
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    *) usage ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN_DIR=${HST_GPU_BIN:-$ROOT/gpu-bin}
BUDGET=${HST_BENCH_BUDGET:-450}
START=$(date +%s)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/run.log") 2>&1

note() { printf '[%4ds] %s\n' "$(( $(date +%s) - START ))" "$*"; }
left() { echo $(( BUDGET - ( $(date +%s) - START ) )); }

# Run from the repository root: cubecl keeps its autotune cache under ./target when a Cargo.toml is here.
cd "$ROOT"
[ -d "$BIN_DIR/lib" ] && export LD_LIBRARY_PATH="$BIN_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# CubeCL's autotune results (./target/autotune). On a fresh machine CUDA tunes every convolution shape by compiling
# each candidate kernel with NVRTC (seen on an H100: ~5 s per shape, so the first training step takes minutes).
# A cache saved by an earlier run (OUTDIR/autotune, copied to gpu-bin/autotune) is restored here, and this run's
# cache is saved to OUTDIR/autotune at the end.
if [ -d "$BIN_DIR/autotune" ]; then
  mkdir -p target && cp -r "$BIN_DIR/autotune" target/ && echo "restored the autotune cache from $BIN_DIR/autotune"
fi
save_autotune() { [ -d target/autotune ] && cp -r target/autotune "$OUT/" 2>/dev/null; }
trap save_autotune EXIT

# --------------------------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') x $(nproc)"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1
  else
    echo "nvidia-smi: not found"
  fi
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

# --------------------------------------------------------------------------------------------------------------
# Pre-flight
# --------------------------------------------------------------------------------------------------------------
binary_for() {
  case "$1" in
    flex) echo "${HST_BIN:-$ROOT/target/release/hst}" ;;
    cuda) if [ -x "$BIN_DIR/hst-gpu" ]; then echo "$BIN_DIR/hst-gpu"; else echo "$BIN_DIR/hst-cuda"; fi ;;
    wgpu) if [ -x "$BIN_DIR/hst-gpu" ]; then echo "$BIN_DIR/hst-gpu"; else echo "$BIN_DIR/hst-wgpu"; fi ;;
  esac
}

MISSING=()
missing() { MISSING+=("$1"); note "MISSING: $1"; }

find_lib() { # name -> path or empty; ldconfig cache, then LD_LIBRARY_PATH, then the usual CUDA folders
  local name=$1 dir
  ldconfig -p 2>/dev/null | awk -v n="$name" '$1 ~ "^"n {print $NF; exit}' | grep . && return 0
  IFS=: read -ra dirs <<< "${LD_LIBRARY_PATH:-}"
  # Python wheels (nvidia-cuda-nvrtc, cuda-toolkit) ship NVRTC outside the linker's path; /usr/local/nvidia holds
  # the driver in many containers.
  for dir in "${dirs[@]}" /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
             /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 \
             /opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib /usr/local/lib/python3*/dist-packages/nvidia/*/lib \
             /usr/lib/python3/dist-packages/nvidia/*/lib; do
    for f in "$dir"/"$name"*; do [ -e "$f" ] && { echo "$f"; return 0; }; done
  done
  return 1
}

check_cuda() {
  local ok=0 lib
  command -v nvidia-smi >/dev/null 2>&1 || { missing "cuda: nvidia-smi not found (no NVIDIA driver?)"; ok=1; }
  if lib=$(find_lib libcuda.so); then note "cuda: driver library $lib"; else
    missing "cuda: libcuda.so (NVIDIA driver) not found"; ok=1; fi
  if lib=$(find_lib libnvrtc.so); then
    note "cuda: NVRTC $lib"
    case ":${LD_LIBRARY_PATH:-}:" in *":$(dirname "$lib"):"*) ;; *)
      ldconfig -p 2>/dev/null | grep -q libnvrtc.so || export LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
  else
    missing "cuda: libnvrtc.so (CUDA runtime compiler, from the CUDA toolkit) not found; carry it in gpu-bin/lib"
    ok=1
  fi
  return $ok
}

check_vulkan() {
  local ok=0 lib icd=""
  if lib=$(find_lib libvulkan.so.1); then note "wgpu: Vulkan loader $lib"; else
    missing "wgpu: the Vulkan loader libvulkan.so.1 is not installed (Debian/Ubuntu package libvulkan1); carry it in gpu-bin/lib"
    ok=1
  fi
  if [ -n "${VK_ICD_FILENAMES:-}" ]; then
    note "wgpu: VK_ICD_FILENAMES=$VK_ICD_FILENAMES (given)"
  else
    for f in /usr/share/vulkan/icd.d/nvidia*.json /etc/vulkan/icd.d/nvidia*.json /usr/local/share/vulkan/icd.d/nvidia*.json \
             /usr/local/nvidia/share/vulkan/icd.d/nvidia*.json; do
      [ -e "$f" ] && { icd=$f; break; }
    done
    if [ -z "$icd" ]; then
      # Containers often have the NVIDIA Vulkan driver (libGLX_nvidia) without its ICD manifest: write one.
      if lib=$(find_lib libGLX_nvidia.so.0); then
        icd="$OUT/nvidia_icd.json"
        printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3"}}\n' "$lib" > "$icd"
        note "wgpu: no NVIDIA ICD manifest installed; wrote $icd for $lib"
      else
        missing "wgpu: no NVIDIA Vulkan ICD (no nvidia_icd.json in /usr/share/vulkan/icd.d or /etc/vulkan/icd.d, no libGLX_nvidia.so.0: the container lacks the driver's graphics capability, NVIDIA_DRIVER_CAPABILITIES must include graphics)"
        ok=1
      fi
    fi
    # Only the NVIDIA driver: otherwise wgpu might pick a software device (lavapipe) and time the CPU.
    # VK_ICD_FILENAMES for older loaders, VK_DRIVER_FILES for newer ones.
    [ -n "$icd" ] && export VK_ICD_FILENAMES="$icd" VK_DRIVER_FILES="$icd" && note "wgpu: VK_ICD_FILENAMES=$icd"
  fi
  ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>/dev/null | sed 's/^/  icd.d: /'
  return $ok
}

check_binary() { # backend -> 0 if its binary starts and `hst backends` says ok
  local b=$1 bin line
  bin=$(binary_for "$b")
  if [ ! -x "$bin" ]; then
    missing "$b: binary $bin not found (build it as the header of $0 says and carry gpu-bin/)"
    return 1
  fi
  if ! "$bin" --version >/dev/null 2>"$OUT/start-$b.err"; then
    missing "$b: $bin does not start here: $(head -c 400 "$OUT/start-$b.err")"
    return 1
  fi
  line=$(timeout 120 "$bin" backends 2>&1 | grep -E "^$b " || true)
  note "$b: hst backends: ${line:-no line for $b}"
  case "$line" in
    *" ok") return 0 ;;
    *) missing "$b: the backend cannot start: ${line:-not compiled into $bin}"; return 1 ;;
  esac
}

if [ "$DRY" = 1 ]; then
  note "dry run: CPU only (flex); GPU pre-flight checks report only"
  check_cuda || true
  check_vulkan || true
  MISSING=()
  BACKENDS=()
  check_binary flex && BACKENDS=(flex)
else
  BACKENDS=()
  check_cuda && check_binary cuda && BACKENDS+=(cuda)
  check_vulkan && check_binary wgpu && BACKENDS+=(wgpu)
fi
note "backends to measure: ${BACKENDS[*]:-none}"

# --------------------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------------------
printf 'backend\tstep\trc\tseconds\n' > "$OUT/status.tsv"
FAILED=0
run() { # backend step cap_seconds args...
  local b=$1 step=$2 cap=$3 bin t0 rc limit
  shift 3
  bin=$(binary_for "$b")
  limit=$(( $(left) - 5 ))
  [ "$limit" -gt "$cap" ] && limit=$cap
  if [ "$limit" -lt 20 ]; then
    note "$b $step: skipped, budget spent"
    printf '%s\t%s\tskipped\t0\n' "$b" "$step" >> "$OUT/status.tsv"
    return 0
  fi
  note "$b $step (timeout ${limit}s): $bin --backend $b bench $*"
  t0=$(date +%s)
  if [ -n "${CAPTURE:-}" ]; then
    timeout --kill-after=10 "$limit" "$bin" --backend "$b" bench "$@" | tee "$CAPTURE"
    rc=${PIPESTATUS[0]}
  else
    timeout --kill-after=10 "$limit" "$bin" --backend "$b" bench "$@"
    rc=$?
  fi
  printf '%s\t%s\t%s\t%s\n' "$b" "$step" "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/status.tsv"
  case $rc in
    0) ;;
    124|137) note "$b $step: TIMEOUT after ${limit}s"; FAILED=1 ;;
    *) note "$b $step: FAILED (exit $rc)"; FAILED=1 ;;
  esac
}

RES=(--json "$OUT/results.jsonl" --markdown "$OUT/results.md")

# The PyTorch anchor of voc-small (benches/pytorch/hst_anchor.py) on the same device, one JSON line to
# anchor.jsonl. Python: HST_PYTHON, else the venv of benches/pytorch/setup.sh when present, else python3.
PY=${HST_PYTHON:-}
[ -z "$PY" ] && [ -x "$ROOT/target/pytorch-venv/bin/python" ] && PY=$ROOT/target/pytorch-venv/bin/python
PY=${PY:-python3}
anchor() { # device args...
  local dev=$1 t0 rc limit version
  shift
  if ! version=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
    note "PyTorch anchor: skipped, $PY cannot import torch"
    printf 'pytorch\tanchor\tskipped\t0\n' >> "$OUT/status.tsv"
    return 0
  fi
  limit=$(( $(left) - 5 ))
  [ "$limit" -gt 120 ] && limit=120
  if [ "$limit" -lt 20 ]; then
    note "PyTorch anchor: skipped, budget spent"
    printf 'pytorch\tanchor\tskipped\t0\n' >> "$OUT/status.tsv"
    return 0
  fi
  note "PyTorch anchor: torch $version on $dev (timeout ${limit}s)"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$PY" "$ROOT/benches/pytorch/hst_anchor.py" --device "$dev" --json "$@" \
    > "$OUT/anchor.out" 2> "$OUT/anchor.err"
  rc=$?
  printf 'pytorch\tanchor\t%s\t%s\n' "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/status.tsv"
  if [ "$rc" = 0 ]; then
    tail -1 "$OUT/anchor.out" >> "$OUT/anchor.jsonl"
    tail -2 "$OUT/anchor.err"
  else
    note "PyTorch anchor: FAILED (exit $rc): $(tail -3 "$OUT/anchor.err")"
    FAILED=1
  fi
}

if [ "$DRY" = 1 ]; then
  # Tiny shapes: every code path of the GPU run, in a minute or two on 2 CPU cores.
  TINY=(--steps 1 --warmup 0 --data-batches 1)
  CAPTURE="$OUT/check-flex.md" run flex check 120 --check --config default,voc-small --check-batch 2 \
    --image-size 64 --json "$OUT/check.jsonl"
  run flex default 60 --config default --batch 4 "${TINY[@]}" "${RES[@]}"
  run flex voc-small 90 --config voc-small --batch 2 --image-size 64 "${TINY[@]}" "${RES[@]}"
  run flex paper 120 --config paper --batch 2 --image-size 64 "${TINY[@]}" "${RES[@]}"
  run flex vg 120 --config vg --batch 2 --image-size 64 "${TINY[@]}" "${RES[@]}"
  anchor cpu --warmup 0 --steps 1 --batch 2 --image-size 64
else
  for b in "${BACKENDS[@]}"; do
    CAPTURE="$OUT/check-$b.md" run "$b" check 90 --check --config default,voc-small --check-batch 2 \
      --json "$OUT/check.jsonl"
  done
  # Most important first; later runs reuse the autotune cache of earlier ones (./target/autotune).
  for b in "${BACKENDS[@]}"; do
    run "$b" default 60 --config default --warmup 3 --steps 20 "${RES[@]}"
    run "$b" voc-small 70 --config voc-small --warmup 3 --steps 10 "${RES[@]}"
    run "$b" paper 100 --config paper --warmup 2 --steps 5 "${RES[@]}"
  done
  anchor cuda --warmup 3 --steps 10
  for b in "${BACKENDS[@]}"; do
    run "$b" vg 80 --config vg --warmup 2 --steps 5 "${RES[@]}"
  done
  # The WGPU smoke test (tests/wgpu_smoke.rs) on the real GPU, known lavapipe failures included, if it was carried:
  #   cargo test --release --features wgpu --test wgpu_smoke --no-run   (then copy the printed binary to gpu-bin/wgpu_smoke)
  if [[ " ${BACKENDS[*]} " == *" wgpu "* ]] && [ -x "$BIN_DIR/wgpu_smoke" ] && [ "$(left)" -gt 40 ]; then
    note "wgpu smoke test on the GPU: $BIN_DIR/wgpu_smoke --include-ignored"
    t0=$(date +%s)
    CI=1 timeout --kill-after=10 $(( $(left) - 10 )) "$BIN_DIR/wgpu_smoke" --include-ignored --test-threads 1 \
      > "$OUT/wgpu-smoke.log" 2>&1
    rc=$?
    printf 'wgpu\tsmoke-test\t%s\t%s\n' "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/status.tsv"
    grep -E "^test |test result|relative difference|differs" "$OUT/wgpu-smoke.log" | head -60
  fi
fi

# JSON array of every result.
if [ -s "$OUT/results.jsonl" ]; then
  { echo "["; sed '$!s/$/,/' "$OUT/results.jsonl"; echo "]"; } > "$OUT/results.json"
fi

echo
note "done in $(( $(date +%s) - START )) s"
[ ${#MISSING[@]} -eq 0 ] || { echo "missing:"; printf '  - %s\n' "${MISSING[@]}"; }
echo "status:"; column -t "$OUT/status.tsv" 2>/dev/null || cat "$OUT/status.tsv"
echo; echo "results ($OUT/results.md):"; cat "$OUT/results.md" 2>/dev/null || echo "  none"
echo; echo "ratios ($OUT/ratios.md):"
python3 "$ROOT/benches/gpu/ratios.py" "$OUT" || FAILED=1
if [ ${#BACKENDS[@]} -eq 0 ]; then
  echo "error: no backend could run (see 'missing' above)" >&2
  exit 1
fi
exit $FAILED
