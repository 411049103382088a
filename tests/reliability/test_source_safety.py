"""No code path that runs what a user's file says: a source scan, so a regression fails CI.

Files a user supplies (models, checkpoints, configs, bundles, datasets) must never be
unpickled without ``weights_only=True``, parsed by an unsafe YAML loader, or reach a
shell or ``eval``.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "packages").glob("*/src/**/*.py"))


def _name(func):
    """Dotted name of a call target (``torch.load``, ``eval``), or ''."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):  # model.to(dev).eval(): a method, not eval()
        return ""
    parts.append(func.id)
    return ".".join(reversed(parts))


def _keyword(call, name):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_true(node):
    return isinstance(node, ast.Constant) and node.value is True


def _problems(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if name in ("eval", "exec", "compile", "os.system", "os.popen"):
            found.append(f"{where}: {name}()")
        if name.startswith("subprocess.") and _is_true(_keyword(node, "shell")):
            found.append(f"{where}: {name}(shell=True)")
        if name.endswith("torch.load") and not _is_true(_keyword(node, "weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
        if name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
            found.append(f"{where}: {name}()")
        if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            found.append(f"{where}: {name}()")
        if name == "yaml.load":
            loader = _keyword(node, "Loader")
            if loader is None or _name(loader) not in ("_NoAliasLoader", "yaml.SafeLoader"):
                found.append(f"{where}: yaml.load with an unsafe or missing Loader")
        if name.endswith("np.load") and _is_true(_keyword(node, "allow_pickle")):
            found.append(f"{where}: np.load(allow_pickle=True)")
        if name.endswith("extractall"):
            found.append(f"{where}: extractall (members must be checked one by one)")
    return found


def test_sources_are_found():
    assert len(SOURCES) > 20


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT / "packages")))
def test_no_unsafe_call(path):
    assert _problems(path) == []


def test_the_scan_catches_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch, yaml, subprocess, pickle\n"
        "torch.load('x')\nyaml.load('a')\nsubprocess.run('ls', shell=True)\n"
        "eval('1')\npickle.loads(b'')\n"
    )
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert len(_problems(bad)) == 5
    finally:
        ROOT = old
