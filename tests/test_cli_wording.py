"""Every ``empanada`` command words its errors in flags, as the user typed them.

Library errors name Python arguments (``overwrite=True``, ```label_divisor```,
``key=``); the command line rewords them (empanada_models.cli.cli_message). Each
case below runs a real command that fails and greps its stderr.
"""

import re
import types

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("empanada_train")
tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

from empanada_models.cli import cli_message, main  # noqa: E402
from empanada_models.testing import write_test_model  # noqa: E402

# What a Python keyword or argument name looks like in a message.
PYTHON_NAMES = re.compile(
    r"\b[a-z_]+=(?:True|False|None|['\"\d]|,|\s|$)"  # overwrite=True, key=, device='cpu'
    r"|`[a-z]+_[a-z_]+`"  # `label_divisor`, `n_patches`
    r"|`(?:key|level|overwrite|force|quantized|device|mode|labels|image)`"
)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    write_test_model(tmp_path, "Blob")
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "img.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "vol.tif", rng.integers(0, 255, (4, 64, 64), dtype=np.uint8),
                     photometric="minisblack")
    yy, xx = np.mgrid[:64, :64]
    blobs = np.full((64, 64), 200, np.uint8)
    for cy, cx in [(12, 12), (12, 50), (50, 12), (50, 50)]:
        blobs[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 40
    tifffile.imwrite(tmp_path / "blobs.tif", blobs)
    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    for name in ("a", "b"):
        group.create_array(name, shape=(4, 8, 8), dtype="u1")
    return tmp_path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


SEG = ["--model", "Blob.yaml", "--quiet"]

CASES = [
    # (setup commands that must succeed, failing command, flag the message must name)
    ([], ["segment", "img.tif", "-o", "o.tif", *SEG, "--quantized"], "--quantized"),
    ([], ["segment", "two.zarr", "-o", "o.tif", *SEG], "--key"),
    ([], ["segment", "img.tif", "-o", "o.tif", *SEG, "--key", "a"], "--key"),
    ([], ["segment", "img.tif", "-o", "o.tif", *SEG, "--level", "1"], "--level"),
    ([], ["segment", "blobs.tif", "-o", "o.tif", *SEG, "--max-objects", "2"], "--max-objects"),
    ([["segment", "img.tif", "-o", "o.tif", *SEG]],
     ["segment", "img.tif", "-o", "o.tif", *SEG], "--overwrite"),
    ([], ["segment", "img.tif", "-o", "o.tif", *SEG, "--median-size", "4", "--mode", "2d"],
     "--median-size"),
    ([], ["evaluate", "two.zarr", "img.tif"], "--pred-key"),
    ([], ["evaluate", "img.tif", "img.tif", "--gt-key", "x"], "--gt-key"),
    ([["models", "register", "Blob", "Blob.yaml"]],
     ["models", "register", "Blob", "Blob.yaml"], "--overwrite"),
    ([["models", "register", "Blob", "Blob.yaml"], ["models", "export", "Blob", "b.empanada"]],
     ["models", "export", "Blob", "b.empanada"], "--force"),
    ([["models", "register", "Blob", "Blob.yaml"], ["models", "export", "Blob", "b.empanada"]],
     ["models", "import", "b.empanada", "--name", "Blob"], "--force"),
    ([], ["patches", "pick", "img.tif", "-o", "p", "--size", "100", "--n", "2"], "--n"),
    ([], ["patches", "pick", "img.tif", "-o", "p", "--labels", "vol.tif"], "vol.tif"),
    ([], ["train", "--train-dir", ".", "--iterations", "1"], "--name"),
    ([], ["finetune", "Blob.yaml", ".", "--patch-size", "10"], "--patch-size"),
]


@pytest.mark.parametrize(("setup", "argv", "flag"), CASES,
                         ids=[" ".join(c[1][:3]) + f" [{c[2]}]" for c in CASES])
def test_errors_name_flags_not_python_arguments(workdir, capsys, setup, argv, flag):
    for command in setup:
        code, _, err = run(capsys, *command)
        assert code == 0, err
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert err.startswith("empanada: error: "), err
    assert flag in err, err
    assert not PYTHON_NAMES.search(err), err
    assert "Traceback" not in err


@pytest.mark.parametrize(("text", "expected"), [
    ("out.tif exists; pass overwrite=True (--overwrite) to replace it",
     "out.tif exists; pass --overwrite to replace it"),
    ("b exists; choose another name or overwrite it (overwrite=True, --force)",
     "b exists; choose another name or overwrite it (--force)"),
    ("class 1 has 5 objects in 3D, more than label_divisor - 1 = 1; raise `label_divisor` "
     "or pass on_overflow='drop' to keep only the largest",
     "class 1 has 5 objects in 3D, more than 1 (--max-objects - 1); raise --max-objects"),
    ("quantized models run on the CPU only; got device='cuda:0'. Use quantized=False on cuda",
     "quantized models run on the CPU only; got --device cuda:0; leave out --quantized"),
])
def test_cli_message_rewords_library_phrases(text, expected):
    assert cli_message(text, aliases={"label_divisor": "--max-objects"}) == expected


def test_a_model_that_scores_pq_0_is_registered_with_a_warning(capsys):
    from empanada_train.cli import _report

    result = types.SimpleNamespace(
        model_name="Tiny", model_dir="Tiny", model_path="Tiny/Tiny.pth", config_path=None,
        quantized_path=None, checkpoint_path="c", log_path="l", plot_path=None, iterations=3,
        total_iterations=3, history=[], best=None, metrics={"pq": 0.0, "f1_50": 0.0},
        exported_from="last", registered=types.SimpleNamespace(name="Tiny"), stopped=False,
        seconds=1.0, notes=[])
    args = types.SimpleNamespace(json=False)
    with pytest.warns(UserWarning, match="'Tiny' scored PQ 0 on its validation data after 3 "
                                         "iterations; it is registered"):
        assert _report(result, args) == 0
    assert "registered 'Tiny'" in capsys.readouterr().out
    result.metrics = {"pq": 0.4}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _report(result, args) == 0


def test_patches_of_generic_file_names_take_their_folder_name(workdir, capsys):
    """Datasets that are all images.tif: no ds/images/images/... and no shared source."""
    from empanada_train._store import load_dataset

    for folder in ("lucchi", "vnc"):
        (workdir / folder).mkdir()
        tifffile.imwrite(workdir / folder / "images.tif", tifffile.imread(workdir / "blobs.tif"))
        tifffile.imwrite(workdir / folder / "labels.tif",
                         (tifffile.imread(workdir / "blobs.tif") < 100).astype(np.uint32))
        code, _, err = run(capsys, "patches", "pick", f"{folder}/images.tif", "-o", "picks",
                           "--labels", f"{folder}/labels.tif", "--n", 2, "--size", 32)
        assert code == 0, err
    code, _, err = run(capsys, "patches", "store", "picks", "data", "ds")
    assert code == 0, err
    assert sorted(p.name for p in (workdir / "data" / "ds").iterdir()) == ["lucchi", "vnc"]
    assert {s for _, _, s in load_dataset(workdir / "data" / "ds")} == {"lucchi", "vnc"}


HELP = [["segment"], ["evaluate"], ["models"], ["models", "list"], ["models", "info"],
        ["models", "register"], ["models", "export"], ["models", "import"], ["train"],
        ["finetune"], ["patches", "pick"], ["patches", "store"]]


@pytest.mark.parametrize("command", HELP, ids=[" ".join(c) for c in HELP])
def test_help_has_no_default_none_glitches(capsys, command):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: empanada")
    for glitch in ("(default: None)", "(default: False)", "default: None", "None:"):
        assert glitch not in out, f"`empanada {' '.join(command)} --help` shows {glitch!r}"
