"""empanada-train: patches, datasets, targets, augmentations, losses, training and finetuning.

Public names load their module on first use (the datasets import torch).
"""

import lazy_loader

__version__ = "0.1.0"

# private module -> the public names it defines; each module loads on first use
__getattr__, __dir__, _public = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_patches": [
            "Patch", "pick_patches", "pick_patches_from_file", "parse_patch_name",
        ],
        "_store": [
            "store_patches", "load_dataset",
        ],
        "_dataset": [
            "SingleClassInstanceDataset", "PanopticDataset", "example_weights",
            "weighted_sampler", "compute_norms", "DEFAULT_NORMS", "SampleStream",
        ],
        "_targets": [
            "heatmap_and_offsets", "gaussian_kernel_size",
        ],
        "_augment": [
            "Compose", "RandomScale", "PadIfNeeded", "RandomCrop", "RandomRotate",
            "HorizontalFlip", "VerticalFlip", "RandomBrightnessContrast", "GaussianBlur",
            "GaussianNoise", "RandomInvert", "FactorPad", "default_train_augmentations",
            "eval_transform", "ORIGINAL_SCALE_RANGE", "RandomGamma", "SectionArtefacts",
        ],
        "_losses": [
            "BootstrapCE", "HeatmapMSE", "OffsetL1", "PointRendLoss", "PanopticLoss",
        ],
        "_config": [
            "TrainConfig", "TrainConfigError", "LabelSpec", "parse_label_spec",
            "merge_configs", "FINETUNE_LAYERS", "DEFAULTS",
        ],
        "_train": [
            "train",
        ],
        "_finetune": [
            "finetune", "trainable_model",
        ],
        "_loop": [
            "TrainResult", "set_trainable_layers", "load_checkpoint",
        ],
    },
)
__all__ = ["__version__", *_public]
