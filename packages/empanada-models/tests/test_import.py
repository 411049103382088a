import empanada_models


def test_version_is_lockstep_with_core():
    import empanada_core

    assert empanada_models.__version__ == empanada_core.__version__
