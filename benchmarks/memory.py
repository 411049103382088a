"""Peak memory of `empanada segment` stack and ortho runs into zarr, per voxel.

Each case runs the real command line (``empanada_models.cli.main``) in a fresh
process on a crop of the Lucchi FIB-SEM volume with the built-in default model
(MitoLite_v1), writing a zarr store, and reads the process's peak resident set
(``VmHWM``). The table gives the peak, the growth over the smallest case, and
that growth in bytes per voxel of the extra slices: a streaming stack run should
add (almost) nothing per slice; ortho keeps its three stacks in memory (three
uint32 volumes, 12 bytes per voxel, plus the consensus).

    python benchmarks/memory.py [--slices 16 32 64] [--size 512] [--modes stack ortho]

Needs empanada-core, -models and -infer installed and ../shared/data (or
$EMPANADA_DATA_DIR).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

_CHILD = textwrap.dedent("""
    import json, sys, time
    from empanada_models.cli import main

    start = time.perf_counter()
    code = main(sys.argv[1:])
    seconds = time.perf_counter() - start
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
                if line.startswith("VmHWM"))
    print(json.dumps({"code": code, "peak": peak, "seconds": seconds}))
""")


def _run(image, out, mode):
    argv = ["segment", str(image), "-o", str(out), "--mode", mode, "--quiet", "--overwrite"]
    done = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} on {image} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--size", type=int, default=512, help="crop height and width")
    parser.add_argument("--modes", nargs="+", default=["stack", "ortho"])
    args = parser.parse_args(argv)

    import tifffile

    from empanada_core.testing import find_data_dir

    base_dir = find_data_dir()
    if base_dir is None:
        raise SystemExit("../shared/data not found (set EMPANADA_DATA_DIR)")
    source = base_dir / "lucchi_epfl_hippocampus" / "images.tif"
    volume = tifffile.memmap(source)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for mode in args.modes:
            base = None
            for n in sorted(args.slices):
                crop = tmp / f"crop{n}.tif"
                tifffile.imwrite(crop, volume[:n, :args.size, :args.size])
                r = _run(crop, tmp / f"{mode}{n}.zarr", mode)
                voxels = n * args.size * args.size
                if base is None:
                    base = (r["peak"], voxels)
                growth = r["peak"] - base[0]
                per_voxel = growth / (voxels - base[1]) if voxels > base[1] else float("nan")
                rows.append((mode, n, r["seconds"], r["peak"] / 2**20, growth / 2**20,
                             per_voxel))
    print(f"{'mode':6} {'slices':>6} {'time s':>7} {'peak MiB':>9} {'growth MiB':>11} "
          f"{'B/extra voxel':>14}")
    for mode, n, sec, peak, growth, per_voxel in rows:
        print(f"{mode:6} {n:6d} {sec:7.1f} {peak:9.0f} {growth:11.0f} {per_voxel:14.2f}")


if __name__ == "__main__":
    main()
