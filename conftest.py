"""Repository-wide pytest hooks."""

import importlib.util


def pytest_ignore_collect(collection_path, config):
    # Doctest collection imports every module; torch-only modules cannot be imported
    # where torch is absent (the `core` session proves core works without it).
    if collection_path.name.endswith("_torch.py") and importlib.util.find_spec("torch") is None:
        return True
    return None
