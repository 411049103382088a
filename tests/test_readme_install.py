"""The README's main-job install line installs every `empanada` command the README names."""

import re
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def main_job_line():
    lines = [line for line in README.splitlines()
             if "pip install" in line and "empanada segment" in line]
    assert len(lines) == 1, "the README has one main-job line (install, then segment)"
    return lines[0]


def commands_of(package_dir):
    meta = tomllib.loads((package_dir / "pyproject.toml").read_text(encoding="utf-8"))
    return set(meta["project"].get("entry-points", {}).get("empanada.commands", {}))


def documented_commands():
    """`empanada segment`, `empanada models list`, `empanada train` / `finetune` / ..."""
    found = set()
    for chain in re.findall(r"`empanada \w+[^`]*`(?:\s*/\s*`\w+`)*", README):
        words = re.findall(r"`([^`]+)`", chain)
        found.add(words[0].split()[1])
        found.update(w for w in words[1:] if w.isidentifier())
    return found


def test_the_main_job_line_installs_every_documented_command():
    installed = re.findall(r"\./packages/(empanada-[a-z]+)", main_job_line())
    commands = {"models"} if "empanada-models" in installed else set()  # built in
    for package in installed:
        commands |= commands_of(ROOT / "packages" / package)
    documented = documented_commands()
    assert {"segment", "evaluate", "models", "train"} <= documented
    assert documented <= commands, f"not installed by the main-job line: {documented - commands}"
    assert main_job_line().index("torch==") < main_job_line().index("./packages/")
