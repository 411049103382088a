"""Ship a trained MitoLite_v1 as empanada-models' built-in default model.

Takes the output folder of ``empanada train configs/train_mitolite.yaml`` and writes

* ``packages/empanada-models/src/empanada_models/weights/MitoLite_v1.pth``: the
  TorchScript file re-packed with deflate compression (a standard zip that
  ``torch.jit.load`` reads; float weights shrink by about 7 %, which keeps the
  file under the 60 MB the package may ship);
* ``packages/empanada-models/src/empanada_models/configs/MitoLite_v1.yaml``: the
  trained config with the packaged weights' relative path and SHA-256, and the
  description given here (put the measured validation scores in it).

Usage::

    python configs/ship_mitolite.py MODEL_DIR --description-file DESCRIPTION.txt
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
    args = parser.parse_args(argv)
    config = yaml.safe_load((args.model_dir / f"{NAME}.yaml").read_text())
    weights = PACKAGE / "weights" / f"{NAME}.pth"
    weights.parent.mkdir(exist_ok=True)
    deflate_zip(args.model_dir / config["model"], weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    config["model"] = f"../weights/{NAME}.pth"
    config["sha256"] = digest
    config["model_quantized"] = None
    config["description"] = " ".join(args.description_file.read_text().split())
    header = (f"# Built-in registry entry: {NAME}, the default model (docs/models.md).\n"
              "# Written by configs/ship_mitolite.py from the training run's config.\n")
    out = PACKAGE / "configs" / f"{NAME}.yaml"
    out.write_text(header + yaml.safe_dump(config, sort_keys=False, width=88))
    print(f"{weights} ({weights.stat().st_size / 1e6:.1f} MB, sha256 {digest[:12]}...)")
    print(out)


if __name__ == "__main__":
    main()
