"""Test sessions for the empanada monorepo.

``nox`` runs the default sessions (lint, core, proofread, tests); ``nox --list`` shows all.
Each session builds a fresh virtualenv, so a green run proves the packages
install from this tree alone.

torch: a CPU build is installed before any package that needs it, because a
plain ``torch`` requirement can pull a multi-GB CUDA build. Set
``EMPANADA_TORCH_SPEC`` (default ``torch==2.13.0``) and, if needed,
``EMPANADA_TORCH_INDEX`` (e.g. https://download.pytorch.org/whl/cpu) to change it.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "core", "proofread", "tests", "napari"]
nox.options.reuse_existing_virtualenvs = False

ROOT = Path(__file__).parent
PACKAGES = ROOT / "packages"
# Dependency order: each package only needs the ones before it.
ORDER = ["core", "models", "infer", "train", "proofread"]
TEST_DEPS = [
    "pytest>=7", "hypothesis>=6.80", "tifffile>=2023.1", "zarr>=3",
    "tomli>=2; python_version < '3.11'",
]


def _install_torch(session):
    spec = os.environ.get("EMPANADA_TORCH_SPEC", "torch==2.13.0")
    index = os.environ.get("EMPANADA_TORCH_INDEX")
    args = ["--index-url", index] if index else []
    session.install(spec, *args)


def _pkg(name):
    return str(PACKAGES / f"empanada-{name}")


@nox.session
def lint(session):
    """ruff over every package, the tests and the benchmarks."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "packages", "tests", "benchmarks", "noxfile.py")


@nox.session
def core(session):
    """empanada-core installed ALONE (no torch, napari or sibling packages) and its tests."""
    session.install(_pkg("core") + "[test]")
    session.run(
        "python", "-c",
        "import importlib.util as u, sys; bad = [m for m in "
        "('torch', 'napari', 'empanada_models', 'empanada_infer') if u.find_spec(m)]; "
        "sys.exit(f'core env must not contain {bad}' if bad else 0)",
    )
    session.run(
        "pytest", "packages/empanada-core/tests", "--doctest-modules", "--pyargs",
        "empanada_core", *session.posargs,
    )


@nox.session
def proofread(session):
    """empanada-proofread ALONE with its declared dependencies (core, numpy, scipy,
    scikit-image; zarr and tifffile from its test extra), no torch or napari, and its tests."""
    session.install(_pkg("core"), _pkg("proofread") + "[test]")
    session.run(
        "python", "-c",
        "import importlib.util as u, sys; bad = [m for m in "
        "('torch', 'napari', 'empanada_models', 'empanada_infer', 'empanada_train') "
        "if u.find_spec(m)]; sys.exit(f'proofread env must not contain {bad}' if bad else 0)",
    )
    session.run(
        "pytest", "packages/empanada-proofread/tests", "--doctest-modules", "--pyargs",
        "empanada_proofread", *session.posargs,
    )


@nox.session
def tests(session):
    """Every package installed together (torch CPU first), the full test suite."""
    _install_torch(session)
    session.install(*TEST_DEPS)
    for name in ORDER:  # infer with its Dask extra, so the blockwise tests run
        session.install("-e", _pkg(name) + ("[distributed]" if name == "infer" else ""))
    suites = [f"packages/empanada-{name}/tests" for name in ORDER]
    srcs = [f"packages/empanada-{name}/src" for name in ORDER]
    session.run("pytest", *suites, *srcs, "tests", *session.posargs)


@nox.session
def package(session):
    """empanada-<name> alone with its declared dependencies: ``nox -s package -- models``."""
    name = session.posargs[0] if session.posargs else "core"
    if name not in ORDER:
        session.error(f"unknown package {name!r}; choose from {ORDER}")
    if name != "core":
        _install_torch(session)
    deps = ORDER[: ORDER.index(name)]
    for dep in deps:
        session.install(_pkg(dep))
    session.install(_pkg(name), *TEST_DEPS)
    session.run("pytest", f"packages/empanada-{name}/tests", *session.posargs[1:])


@nox.session
def benchmarks(session):
    """Run the benchmark scripts (prints tables; never fails on timings)."""
    session.install(_pkg("core"), "tifffile", "zarr>=3")
    session.run("python", "benchmarks/core.py", *session.posargs)


@nox.session
def napari(session):
    """The napari plugin in a real viewer: CPU torch, the packages, napari, PyQt6, pytest-qt.

    napari draws with OpenGL, which Qt's ``offscreen`` platform does not provide, so
    the tests run under Xvfb (Debian/Ubuntu: ``apt-get install xvfb``) when there is
    no display.
    """
    import shutil

    _install_torch(session)
    session.install(*TEST_DEPS)
    for name in ORDER:
        session.install("-e", _pkg(name))
    session.install("-e", _pkg("napari"), "napari>=0.5", "PyQt6>=6.5", "pytest-qt>=4")
    args = ["pytest", "packages/empanada-napari/tests", "packages/empanada-napari/src",
            *session.posargs]
    if os.environ.get("DISPLAY"):
        session.run(*args)
    elif shutil.which("xvfb-run"):
        session.run("xvfb-run", "-a", "-s", "-screen 0 1600x1200x24", *args, external=True)
    else:
        session.error("the napari tests need a display: install Xvfb (apt-get install xvfb) "
                      "or set DISPLAY")

