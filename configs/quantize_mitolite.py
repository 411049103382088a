"""Make the int8 CPU model of a trained MitoLite (the ``model_quantized`` of its config).

Rebuilds the eager architecture from the trained config's ``MODEL`` block with the
TorchScript file's weights (:func:`empanada_train.trainable_model`), calibrates
the int8 ranges on random crops of the training tiles (every source), exports
``<name>_quantized.pth`` next to the float model and records it, with its
SHA-256, in the config, so ``empanada segment --model CONFIG --quantized`` runs it.

Usage::

    python configs/quantize_mitolite.py runs/MitoLite_v2/MitoLite_v2.yaml mitolite_data_v2/train
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import tifffile
import yaml


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the trained model's config (.yaml)")
    parser.add_argument("train_dir", type=Path, help="training tiles (empanada layout)")
    parser.add_argument("--backend", default="x86", choices=("x86", "fbgemm", "qnnpack"))
    parser.add_argument("--images-per-source", type=int, default=6)
    args = parser.parse_args(argv)

    import empanada_models as em
    from empanada_train import load_dataset
    from empanada_train._finetune import trainable_model

    config = em.ModelConfig.from_yaml(args.config)
    model, kind = trainable_model(config)
    if kind != "eager":
        raise SystemExit(f"{args.config} has no MODEL block: cannot rebuild it for int8")
    by_source = {}
    for image, _, source in load_dataset(args.train_dir):
        by_source.setdefault(source, []).append(image)
    rng = np.random.default_rng(0)
    images = [tifffile.imread(path) for paths in by_source.values()
              for path in rng.choice(paths, min(args.images_per_source, len(paths)),
                                     replace=False)]
    batches = em.calibration_batches_from_images(
        images, mean=config.norms.mean, std=config.norms.std, patch_size=256, n_batches=8,
        batch_size=4)
    out = args.config.with_name(f"{args.config.stem}_quantized.pth")
    em.export_quantized_torchscript(model.eval(), out, batches, backend=args.backend)
    data = yaml.safe_load(args.config.read_text())
    data["model_quantized"] = out.name
    data["sha256_quantized"] = hashlib.sha256(out.read_bytes()).hexdigest()
    args.config.write_text(yaml.safe_dump(data, sort_keys=False, width=88))
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB); {args.config} updated")


if __name__ == "__main__":
    main()
