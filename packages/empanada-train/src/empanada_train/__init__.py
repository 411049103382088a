"""empanada-train: patches, datasets, targets, augmentations, losses, training and finetuning.

Public names load their module on first use (the datasets import torch).
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    # picking and storing patches
    "Patch": "_patches",
    "pick_patches": "_patches",
    "pick_patches_from_file": "_patches",
    "parse_patch_name": "_patches",
    "store_patches": "_store",
    "load_dataset": "_store",
    # datasets and targets
    "SingleClassInstanceDataset": "_dataset",
    "PanopticDataset": "_dataset",
    "example_weights": "_dataset",
    "weighted_sampler": "_dataset",
    "SampleStream": "_dataset",
    "compute_norms": "_dataset",
    "DEFAULT_NORMS": "_dataset",
    "heatmap_and_offsets": "_targets",
    "gaussian_kernel_size": "_targets",
    # augmentations
    "Compose": "_augment",
    "RandomScale": "_augment",
    "PadIfNeeded": "_augment",
    "RandomCrop": "_augment",
    "RandomRotate": "_augment",
    "HorizontalFlip": "_augment",
    "VerticalFlip": "_augment",
    "RandomBrightnessContrast": "_augment",
    "GaussianBlur": "_augment",
    "GaussianNoise": "_augment",
    "RandomInvert": "_augment",
    "RandomGamma": "_augment",
    "SectionArtefacts": "_augment",
    "FactorPad": "_augment",
    "default_train_augmentations": "_augment",
    "eval_transform": "_augment",
    "ORIGINAL_SCALE_RANGE": "_augment",
    # losses
    "BootstrapCE": "_losses",
    "HeatmapMSE": "_losses",
    "OffsetL1": "_losses",
    "PointRendLoss": "_losses",
    "PanopticLoss": "_losses",
    # configs, training, finetuning
    "TrainConfig": "_config",
    "TrainConfigError": "_config",
    "LabelSpec": "_config",
    "parse_label_spec": "_config",
    "merge_configs": "_config",
    "FINETUNE_LAYERS": "_config",
    "train": "_train",
    "finetune": "_finetune",
    "trainable_model": "_finetune",
    "TrainResult": "_engine",
    "set_trainable_layers": "_engine",
    "load_checkpoint": "_engine",
    "DEFAULTS": "_config",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'empanada_train' has no attribute {name!r}") from None
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
