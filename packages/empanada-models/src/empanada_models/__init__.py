"""empanada-models: architectures, TorchScript / int8 export and the model registry.

Public names load their module on first use, so ``import empanada_models`` is
cheap and does not import torch (the registry and config parts never need it
until a model is loaded).
"""

import lazy_loader

__version__ = "0.1.0"

# private module -> the public names it defines; each module loads on first use
__getattr__, __dir__, _public = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_builders": [
            "panoptic_deeplab", "panoptic_deeplab_pr", "panoptic_bifpn", "panoptic_bifpn_pr",
            "mitonet_v1", "mitonet_v1_mini", "build_model", "count_parameters",
            "load_encoder_weights", "load_model_weights", "WeightLoadReport",
        ],
        "_encoders": [
            "register_encoder", "list_encoders", "build_encoder",
        ],
        "_export": [
            "fuse_model", "export_torchscript",
        ],
        "_quantize": [
            "quantize_model", "export_quantized_torchscript",
            "calibration_batches_from_images",
        ],
        "_config": [
            "ConfigError", "load_yaml", "atomic_output", "ModelConfig", "Norms",
        ],
        "_catalogue": [
            "ARCHITECTURES", "Architecture", "get_architecture", "config_architecture",
            "patch_multiple",
        ],
        "_home": [
            "empanada_home", "config_dir", "cache_dir", "models_dir", "archived_dir",
        ],
        "_download": [
            "download_file", "fetch_model_file", "cached_model_file", "cached_download",
            "file_sha256",
            "ModelDownloadError", "ChecksumError",
        ],
        "_registry": [
            "DEFAULT_MODEL", "get_default_model", "list_models", "get_model_config",
            "resolve_model_config", "check_model_file", "WeightsFileError", "load_model",
            "register_model", "archive_model", "ModelNotFoundError", "ModelExistsError",
        ],
        "_info": [
            "model_info",
        ],
        "_device": [
            "resolve_device",
        ],
        "_torchscript": [
            "quiet_torchscript", "save_torchscript",
        ],
        "_bundle": [
            "export_bundle", "import_bundle", "BundleError",
        ],
    },
)
__all__ = ["__version__", *_public]
