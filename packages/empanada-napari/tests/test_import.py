import empanada_napari


def test_version_is_lockstep_with_core():
    import empanada_core

    assert empanada_napari.__version__ == empanada_core.__version__
