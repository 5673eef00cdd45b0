#!/usr/bin/env bash
# Throughput/latency of a running server measured with Triton's perf_analyzer (v2 protocol, over
# HTTP or gRPC).
#
#     benchmarks/perf_analyzer.sh [URL]            # URL defaults to 127.0.0.1:8000 (host:port, no scheme)
#     PROTOCOL=grpc benchmarks/perf_analyzer.sh 127.0.0.1:8001
#
# Runs each example model (iris, diabetes, forest, digits) at 16 concurrent clients twice: once
# with binary tensors (perf_analyzer's default: binary_data extension, application/octet-stream
# bodies) and once with JSON tensors (--input-tensor-format json --output-tensor-format json,
# zero-filled inputs), and prints perf_analyzer's summary for each, server-side statistics
# included (Triton's statistics extension). With PROTOCOL=grpc each model runs once, with
# raw_input_contents (perf_analyzer's gRPC tensors; JSON is HTTP's). It exits non-zero when any
# run fails. It installs
# nothing; it expects a server already running, e.g.
#
#     python -m serving examples --registry models
#     taskset -c 0 python -m serving serve --registry models --port 8000 &
#
# perf_analyzer itself ships in the `tritonclient[all]` wheel (tested with 2.41.1) and needs
# libcudart.so.12 at load time even for CPU-only HTTP runs; the `nvidia-cuda-runtime-cu12` wheel
# provides it. Install both into a venv of their own (not the project's), plus Debian's libb64-0d:
#
#     python3 -m venv .venv-pa && .venv-pa/bin/pip install 'tritonclient[all]==2.41.1' nvidia-cuda-runtime-cu12
#     apt-get install -y libb64-0d
#     PERF_ANALYZER=.venv-pa/bin/perf_analyzer benchmarks/perf_analyzer.sh 127.0.0.1:8000
#
# When libcudart is not already on LD_LIBRARY_PATH, the script looks for it in the
# nvidia/cuda_runtime/lib folder of the venv that holds $PERF_ANALYZER.
#
# Environment:
#   PERF_ANALYZER  path to the binary (default: `perf_analyzer` on PATH)
#   PROTOCOL       http (default) or grpc; the URL is then the server's gRPC port
#   MODELS         models to measure, space-separated (default: the four example models;
#                  MODEL=name still picks one)
#   CONCURRENCY    concurrent clients (default 16)
#   INTERVAL_MS    measurement window in ms (default 5000)
#   STABILITY      allowed spread of the last 3 windows, percent (default 25; perf_analyzer's
#                  own default of 10 rarely settles on a machine shared with the server)
#   MAX_TRIALS     windows before perf_analyzer gives up on a stable measurement (default 20)
#   PA_CPUS        CPU list for taskset (default: 1 on a machine with 2+ cores, so the server can
#                  sit on core 0; empty = no pinning). Pinning is skipped when taskset is missing.
#   PA_EXTRA       extra perf_analyzer arguments, word-split (e.g. "-b 8" or "-v")
#   VERBOSE=1      print perf_analyzer's full output, not just the summary
set -euo pipefail

PROTOCOL="${PROTOCOL:-http}"
case "$PROTOCOL" in
    http) URL="${1:-127.0.0.1:8000}" ;;
    grpc) URL="${1:-127.0.0.1:8001}" ;;
    *) echo "PROTOCOL must be http or grpc, not $PROTOCOL" >&2; exit 2 ;;
esac
URL="${URL#http://}"
MODELS="${MODELS:-${MODEL:-iris diabetes forest digits}}"
CONCURRENCY="${CONCURRENCY:-16}"
INTERVAL_MS="${INTERVAL_MS:-5000}"
STABILITY="${STABILITY:-25}"
MAX_TRIALS="${MAX_TRIALS:-20}"
PA="${PERF_ANALYZER:-$(command -v perf_analyzer || true)}"

if [[ -z "$PA" || ! -x "$PA" ]]; then
    echo "perf_analyzer not found: set PERF_ANALYZER or put it on PATH (see the header of $0)" >&2
    exit 2
fi

# libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel living beside perf_analyzer's venv.
if ! ldd "$PA" 2>/dev/null | grep -q 'libcudart.*=> /'; then
    pa_root="$(cd "$(dirname "$(readlink -f "$PA")")/.." && pwd)"
    for d in "$pa_root"/lib/python3*/site-packages/nvidia/cuda_runtime/lib; do
        if [[ -e "$d/libcudart.so.12" ]]; then
            export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            break
        fi
    done
fi

pin=()
if [[ -z "${PA_CPUS+x}" ]]; then
    PA_CPUS=""
    if [[ "$(nproc 2>/dev/null || echo 1)" -ge 2 ]]; then PA_CPUS=1; fi
fi
if [[ -n "$PA_CPUS" ]]; then
    if command -v taskset >/dev/null 2>&1; then
        pin=(taskset -c "$PA_CPUS")
    else
        echo "note: taskset not found, perf_analyzer runs unpinned" >&2
        PA_CPUS=""
    fi
fi

# shellcheck disable=SC2206  # PA_EXTRA is meant to be word-split
extra=(${PA_EXTRA:-})

run() {
    local model="$1" label="$2"; shift 2
    local out rc=0
    echo "=== $model @ $CONCURRENCY clients, $PROTOCOL, $label tensors (url $URL, perf_analyzer cpus: ${PA_CPUS:-unpinned})"
    out="$("${pin[@]}" "$PA" -m "$model" -u "$URL" -i "$PROTOCOL" \
        --concurrency-range "$CONCURRENCY" --measurement-interval "$INTERVAL_MS" \
        --stability-percentage "$STABILITY" --max-trials "$MAX_TRIALS" \
        "$@" "${extra[@]}" 2>&1)" || rc=$?
    if [[ $rc -ne 0 || "${VERBOSE:-0}" == 1 ]]; then
        printf '%s\n' "$out"
    else
        # The summary: from the last "Request concurrency" block to the end.
        printf '%s\n' "$out" | awk '/^Request concurrency/ {buf=""} {buf = buf $0 "\n"} END {printf "%s", buf}'
    fi
    if [[ $rc -ne 0 ]]; then
        echo "perf_analyzer failed (exit $rc) on $model in $label mode" >&2
        return "$rc"
    fi
}

status=0
for model in $MODELS; do
    if [[ "$PROTOCOL" == grpc ]]; then
        run "$model" raw || status=$?
        echo
        continue
    fi
    run "$model" binary --input-tensor-format binary --output-tensor-format binary || status=$?
    echo
    run "$model" json --input-data zero --input-tensor-format json --output-tensor-format json \
        || status=$?
    echo
done
exit "$status"
