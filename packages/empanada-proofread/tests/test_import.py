import empanada_proofread


def test_version_is_lockstep_with_core():
    import empanada_core

    assert empanada_proofread.__version__ == empanada_core.__version__
