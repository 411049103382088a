"""Cross-package checks: the dependency graph points one way and versions move together."""

import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"
# Who may depend on whom (core <- models <- infer/train <- napari; proofread <- core).
ALLOWED = {
    "empanada-core": set(),
    "empanada-models": {"empanada-core"},
    "empanada-infer": {"empanada-core", "empanada-models"},
    # train reads images through core, not through the inference package
    "empanada-train": {"empanada-core", "empanada-models"},
    "empanada-proofread": {"empanada-core"},
    "empanada-napari": {
        "empanada-core", "empanada-models", "empanada-infer", "empanada-train",
        "empanada-proofread",
    },
}


def project(name):
    return tomllib.loads((PACKAGES / name / "pyproject.toml").read_text())["project"]


def internal_deps(name):
    deps = project(name).get("dependencies", [])
    return {re.split(r"[=<>!~ \[]", d)[0] for d in deps if d.startswith("empanada-")}


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_dependencies_point_one_way(name):
    assert internal_deps(name) <= ALLOWED[name]


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_versions_are_lockstep_and_pinned(name):
    version = project("empanada-core")["version"]
    assert project(name)["version"] == version
    for dep in project(name).get("dependencies", []):
        if dep.startswith("empanada-"):
            assert dep.endswith(f"=={version}"), dep


def test_core_does_not_require_torch_or_napari():
    deps = " ".join(project("empanada-core")["dependencies"])
    assert "torch" not in deps
    assert "napari" not in deps


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_sources_import_only_allowed_siblings(name):
    allowed = {d.replace("-", "_") for d in ALLOWED[name]} | {name.replace("-", "_")}
    pattern = re.compile(r"^\s*(?:from|import)\s+(empanada_\w+)", re.M)
    for path in (PACKAGES / name / "src").rglob("*.py"):
        for module in pattern.findall(path.read_text()):
            assert module in allowed, f"{path.relative_to(ROOT)} imports {module}"


@pytest.mark.parametrize("module", ["empanada_core", "empanada_models", "empanada_infer",
                                    "empanada_train"])
def test_every_public_name_resolves(module):
    """The lazy __init__ maps of each package point at names that exist."""
    import importlib

    package = importlib.import_module(module)
    for name in package.__all__:
        getattr(package, name)
