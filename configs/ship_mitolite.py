"""Ship a trained MitoLite (v1, v2) as a built-in model of empanada-models.

Takes the output folder of the training run (``--name``, default MitoLite_v1) and writes

* ``packages/empanada-models/src/empanada_models/weights/<name>.pth``: the
  TorchScript file re-packed with deflate compression (a standard zip that
  ``torch.jit.load`` reads; float weights shrink by about 7 %, which keeps the
  file under the 60 MB the package may ship);
* ``<name>_quantized.pth`` too when the run's config names one
  (``configs/quantize_mitolite.py``), deflated the same way;
* ``packages/empanada-models/src/empanada_models/configs/<name>.yaml``: the
  trained config with the packaged weights' relative paths and SHA-256, and the
  description given here (put the measured validation scores in it).

Usage::

    python configs/ship_mitolite.py MODEL_DIR --description-file DESCRIPTION.txt [--name MitoLite_v2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import yaml

PACKAGE = Path(__file__).resolve().parents[1] / "packages" / "empanada-models" / "src" / \
    "empanada_models"
NAME = "MitoLite_v1"


def deflate_zip(src, dst):
    """Copy the zip ``src`` to ``dst`` with every entry deflated (atomically)."""
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    try:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(
                tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, zin.read(info.filename))
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="output folder of the training run")
    parser.add_argument("--description-file", type=Path, required=True)
    parser.add_argument("--name", default=NAME, help=f"model name (default {NAME})")
    args = parser.parse_args(argv)
    name = args.name
    config = yaml.safe_load((args.model_dir / f"{name}.yaml").read_text())
    (PACKAGE / "weights").mkdir(exist_ok=True)
    for key, suffix in (("model", ""), ("model_quantized", "_quantized")):
        if not config.get(key):
            config[key] = None
            config.pop(f"sha256{suffix}", None)
            continue
        weights = PACKAGE / "weights" / f"{name}{suffix}.pth"
        deflate_zip(args.model_dir / config[key], weights)
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        config[key] = f"../weights/{name}{suffix}.pth"
        config[f"sha256{suffix}"] = digest
        print(f"{weights} ({weights.stat().st_size / 1e6:.1f} MB, sha256 {digest[:12]}...)")
    config["description"] = " ".join(args.description_file.read_text().split())
    header = (f"# Built-in registry entry: {name} (docs/models.md).\n"
              "# Written by configs/ship_mitolite.py from the training run's config.\n")
    out = PACKAGE / "configs" / f"{name}.yaml"
    out.write_text(header + yaml.safe_dump(config, sort_keys=False, width=88))
    print(out)


if __name__ == "__main__":
    main()
