"""empanada-models: architectures, TorchScript / int8 export and the model registry.

Public names load their module on first use, so ``import empanada_models`` is
cheap and does not import torch (the registry and config parts never need it
until a model is loaded).
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> private module that defines it
_EXPORTS = {
    # architectures
    "panoptic_deeplab": "_builders",
    "panoptic_deeplab_pr": "_builders",
    "panoptic_bifpn": "_builders",
    "panoptic_bifpn_pr": "_builders",
    "mitonet_v1": "_builders",
    "mitonet_v1_mini": "_builders",
    "build_model": "_builders",
    "count_parameters": "_builders",
    "load_encoder_weights": "_builders",
    "load_model_weights": "_builders",
    "WeightLoadReport": "_builders",
    "register_encoder": "_encoders",
    "list_encoders": "_encoders",
    "build_encoder": "_encoders",
    # export
    "fuse_model": "_export",
    "export_torchscript": "_export",
    "quantize_model": "_quantize",
    "export_quantized_torchscript": "_quantize",
    "calibration_batches_from_images": "_quantize",
    # configs
    "ConfigError": "_config",
    "load_yaml": "_config",
    "atomic_output": "_config",
    "ARCHITECTURES": "_config",
    "ModelConfig": "_config",
    "Norms": "_config",
    # registry
    "DEFAULT_MODEL": "_registry",
    "download_file": "_registry",
    "get_default_model": "_registry",
    "list_models": "_registry",
    "get_model_config": "_registry",
    "check_model_file": "_registry",
    "WeightsFileError": "_registry",
    "load_model": "_registry",
    "register_model": "_registry",
    "archive_model": "_registry",
    "archived_dir": "_registry",
    "model_info": "_registry",
    "fetch_model_file": "_registry",
    "cached_model_file": "_registry",
    "file_sha256": "_registry",
    "empanada_home": "_registry",
    "config_dir": "_registry",
    "cache_dir": "_registry",
    "models_dir": "_registry",
    "ModelNotFoundError": "_registry",
    "ModelExistsError": "_registry",
    "ModelDownloadError": "_registry",
    "ChecksumError": "_registry",
    # bundles
    "export_bundle": "_bundle",
    "import_bundle": "_bundle",
    "BundleError": "_bundle",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'empanada_models' has no attribute {name!r}") from None
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
