import empanada_train


def test_version_is_lockstep_with_core():
    import empanada_core

    assert empanada_train.__version__ == empanada_core.__version__
