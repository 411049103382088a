#!/usr/bin/env bash
# One GPU check of empanada: training and inference speed on CUDA, and a short training run.
#
#   bash benchmarks/gpu_check.sh OUT_DIR            (from the repository root)
#
# On a machine with a CUDA GPU it runs, in about 5 minutes on a recent GPU (the parts have
# time limits that keep the whole under 8 minutes):
#   1. benchmarks/train.py on CUDA: full training steps of MitoLite_v1's architecture in
#      fp32 contiguous (baseline), fp32 channels_last and bf16 autocast + channels_last,
#      and the fp32 vs bf16 loss over 20 steps;
#   2. inference on CUDA, fp32 and bf16 (channels_last): end-to-end 3D throughput of
#      MitoLite_v1 in stack and ortho-plane mode against the network's own forward time
#      on the same slices (goal: end-to-end within 1.3x of the forward time);
#   3. a short training run: `empanada finetune MitoLite_v1` for 300 iterations of
#      16 x 256^2 on CUDA (bf16) on the shared EM data (or synthetic tiles without it),
#      with its validation scores.
# Results go to OUT_DIR as JSON (results.json and one file per part) and text (summary.txt,
# and each part's log). On a machine without a CUDA GPU every CUDA part is skipped with a
# line that says so, a small CPU smoke run of the train benchmark checks the script itself,
# and it exits 0 (GPU_CHECK_CPU_SMOKE=0 leaves the smoke run out).
#
# Environment: PYTHON (default .venv/bin/python when it exists, else python3) must import
# torch and the empanada packages; EMPANADA_DATA_DIR or ../shared/data holds the EM data.
set -u -o pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR" >&2
    exit 2
fi
OUT=$1
mkdir -p "$OUT" || { echo "cannot create $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
START=$(date +%s)

if ! "$PYTHON" -c "import torch, empanada_models, empanada_infer, empanada_train" 2>"$OUT/import_error.txt"; then
    say "FAIL: $PYTHON cannot import torch and the empanada packages (see $OUT/import_error.txt);"
    say "      install them first: pip install torch ./packages/empanada-core ./packages/empanada-models ./packages/empanada-infer ./packages/empanada-train"
    exit 1
fi

"$PYTHON" - "$OUT/environment.json" <<'EOF'
import json, os, platform, sys
import torch
info = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available()}
if info["cuda"]:
    info.update(gpu=torch.cuda.get_device_name(), cuda_version=torch.version.cuda,
                bf16=torch.cuda.is_bf16_supported(),
                gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
json.dump(info, open(sys.argv[1], "w"), indent=2)
EOF
CUDA=$("$PYTHON" -c "import json,sys; print(int(json.load(open(sys.argv[1]))['cuda']))" "$OUT/environment.json")
say "empanada GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'no git')"
say "environment: $(tr -d '\n' < "$OUT/environment.json" | tr -s ' ')"

# status of each part: ok, failed (rc), skipped (reason)
declare -A STATUS
run_part() {  # name, time limit (s), command...
    local name=$1 limit=$2
    shift 2
    local t0 rc
    t0=$(date +%s)
    timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        STATUS[$name]="ok"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        STATUS[$name]="failed: over its ${limit} s limit"
    else
        STATUS[$name]="failed (exit $rc, see $name.log)"
    fi
    say "[$name] ${STATUS[$name]} in $(( $(date +%s) - t0 )) s"
    tail -n 40 "$OUT/$name.log" >> "$SUMMARY"
}

if [ "$CUDA" != "1" ]; then
    for part in train_benchmark_cuda infer_cuda short_training_cuda; do
        STATUS[$part]="skipped: no CUDA GPU (torch.cuda.is_available() is False)"
        say "SKIP $part: no CUDA GPU on this machine (torch.cuda.is_available() is False)"
    done
    if [ "${GPU_CHECK_CPU_SMOKE:-1}" = "1" ]; then
        run_part cpu_smoke 300 "$PYTHON" benchmarks/train.py --quick --device cpu \
            --loader-batches 1 --workers 0 --json "$OUT/cpu_smoke.json"
    else
        STATUS[cpu_smoke]="skipped: GPU_CHECK_CPU_SMOKE=0"
        say "SKIP cpu_smoke: GPU_CHECK_CPU_SMOKE=0"
    fi
else
    # 1. training steps: fp32 contiguous vs channels_last vs bf16, and the loss curve
    run_part train_benchmark_cuda 150 "$PYTHON" benchmarks/train.py --device cuda --batch 16 \
        --steps 10 --loss-steps 20 --json "$OUT/train_benchmark_cuda.json"

    # 2. inference: end-to-end 3D throughput against the network's own forward time
    run_part infer_cuda 180 "$PYTHON" - "$OUT/infer_cuda.json" <<'EOF'
import json, sys, time
import numpy as np
import torch
from empanada_core.testing import find_data_dir
from empanada_infer import SegmentationParams, Segmenter

base = find_data_dir()
path = None if base is None else base / "lucchi_epfl_hippocampus" / "images.tif"
if path is not None and path.is_file():
    import tifffile
    volume, source = tifffile.imread(path), "Lucchi FIB-SEM 64 x 768 x 1024"
else:
    rng = np.random.default_rng(0)
    volume, source = rng.integers(0, 255, (64, 768, 1024), dtype=np.uint8), "random 64 x 768 x 1024"

def sync():
    torch.cuda.synchronize()

def forward_time(seg, vol, axis):
    """Seconds of the network alone over every slice along axis (batches as the engine)."""
    slices = np.moveaxis(vol, axis, 0)
    bs = seg.params.batch_size
    seg.forward([seg.normalize(s) for s in slices[:bs]])  # warm-up for this shape
    sync()
    t0 = time.perf_counter()
    for i in range(0, len(slices), bs):
        seg.forward([seg.normalize(s) for s in slices[i:i + bs]])
    sync()
    return time.perf_counter() - t0

rows = []
for precision in ("fp32", "bf16"):
    params = SegmentationParams(precision=precision, channels_last=True)
    seg = Segmenter.from_registry("MitoLite_v1", params, device="cuda")
    seg.segment_stack(volume[:8, :256, :256])  # warm-up
    sync()
    t0 = time.perf_counter(); seg.segment_stack(volume); sync(); stack = time.perf_counter() - t0
    fwd = forward_time(seg, volume, 0)
    crop = volume[:, :384, :384]
    seg.segment_orthoplanes(crop[:8, :64, :64]); sync()
    t0 = time.perf_counter(); seg.segment_orthoplanes(crop); sync(); ortho = time.perf_counter() - t0
    fwd_ortho = sum(forward_time(seg, crop, a) for a in range(3))
    for mode, e2e, net, shape in (("stack", stack, fwd, volume.shape),
                                  ("ortho", ortho, fwd_ortho, crop.shape)):
        row = {"precision": precision, "mode": mode, "shape": list(shape),
               "end_to_end_s": e2e, "forward_s": net, "ratio": e2e / net,
               "voxels_per_s": float(np.prod(shape)) / e2e, "goal_ratio": 1.3}
        rows.append(row)
        print(f"{precision} {mode:5s} {tuple(shape)}: end-to-end {e2e:.2f} s, network forward "
              f"{net:.2f} s, ratio {e2e / net:.2f} (goal <= 1.3), "
              f"{row['voxels_per_s'] / 1e6:.1f} Mvoxel/s", flush=True)
json.dump({"source": source, "gpu": torch.cuda.get_device_name(), "rows": rows},
          open(sys.argv[1], "w"), indent=2)
EOF

    # 3. a short training run on CUDA (bf16, channels_last), with validation
    DATA="$OUT/short_training_data"
    if "$PYTHON" -c "from empanada_core.testing import find_data_dir as f; import sys; d=f(); sys.exit(0 if d and (d/'lucchi_epfl_hippocampus').is_dir() else 1)"; then
        "$PYTHON" configs/mitolite_data.py --out "$DATA" > "$OUT/short_training_data.log" 2>&1
    else
        "$PYTHON" - "$DATA" <<'EOF' > "$OUT/short_training_data.log" 2>&1
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from train import _synthetic_tiles
root = Path(sys.argv[1])
_synthetic_tiles(root / "train", n=24)
_synthetic_tiles(root / "eval", n=4)
EOF
    fi
    run_part short_training_cuda 240 "$PYTHON" -m empanada_models.cli finetune MitoLite_v1 \
        "$DATA/train" --eval-dir "$DATA/eval" --name gpu_check_run --iterations 300 \
        --batch-size 16 --patch-size 256 --lr 0.0003 --layers all --device cuda --workers 8 \
        --no-register --model-dir "$OUT/short_training_run" --json
    if [ "${STATUS[short_training_cuda]}" = "ok" ]; then
        sed -n '/^{/,$p' "$OUT/short_training_cuda.log" > "$OUT/short_training_cuda.json"
    fi
    rm -rf "$DATA" "$OUT/short_training_run"/*_checkpoint.pth.tar
fi

# results.json: the environment, each part's status and its JSON figures
"$PYTHON" - "$OUT" "$(( $(date +%s) - START ))" \
    "$(for k in "${!STATUS[@]}"; do printf '%s=%s\n' "$k" "${STATUS[$k]}"; done)" <<'EOF'
import json, sys
from pathlib import Path
out, seconds, statuses = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
parts = {}
for line in statuses.splitlines():
    name, _, status = line.partition("=")
    figures = out / f"{name}.json"
    try:
        data = json.loads(figures.read_text()) if figures.is_file() else None
    except ValueError:
        data = None
    parts[name] = {"status": status, "figures": data}
report = {"environment": json.loads((out / "environment.json").read_text()),
          "seconds": seconds, "parts": parts}
(out / "results.json").write_text(json.dumps(report, indent=2))
EOF
say "total $(( $(date +%s) - START )) s; results in $OUT/results.json and $SUMMARY"
FAILED=0
for k in "${!STATUS[@]}"; do
    case "${STATUS[$k]}" in failed*) FAILED=1 ;; esac
done
exit $FAILED
