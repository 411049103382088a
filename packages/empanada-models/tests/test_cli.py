"""The ``empanada`` command line: models commands, exit codes, plugin command groups."""

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from empanada_models import cli

pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.(script|save)` is deprecated:DeprecationWarning")


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, render_steps: int = 2,
                interpolate_ins: bool = True) -> dict[str, torch.Tensor]:
        y = self.conv(x)
        return {"sem_logits": y[:, :1], "ctr_hmp": y[:, 1:2], "offsets": y[:, 2:4]}


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("EMPANADA_HOME", str(home))
    return home


@pytest.fixture
def files(tmp_path):
    """A tiny TorchScript model and a training-style config next to it."""
    model = tmp_path / "train" / "w.pth"
    model.parent.mkdir()
    torch.jit.save(torch.jit.script(Tiny()), str(model))
    config = model.with_name("out.yaml")
    config.write_text(yaml.safe_dump({
        "model": "/elsewhere/w.pth", "model_quantized": None,
        "norms": {"mean": 0.5, "std": 0.1}, "padding_factor": 16, "thing_list": [1],
        "labels": [1], "class_names": {1: "mito"}, "description": "A tiny model. For tests.",
        "FINETUNE": {"engine_params": {"label_divisor": 1000}},
    }))
    return model, config


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err):
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("empanada: error:")
    return lines[0]


def test_list(home, capsys):
    code, out, err = run(capsys, "models", "list")
    assert code == 0, err
    assert "* MitoLite_v1 " in out
    assert "  MitoNet_v1 " in out
    assert "MitoNet_v1_mini" in out
    assert "built-in" in out


def test_list_json_and_invalid_configs(home, capsys):
    (home / "configs").mkdir(parents=True)
    (home / "configs" / "Broken.yaml").write_text("model: x.pth\n")
    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["MitoLite_v1"]["default"] is True
    assert rows["MitoNet_v1"]["default"] is False
    assert rows["Broken"]["origin"] == "user"
    assert "missing required key" in rows["Broken"]["error"]
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    assert "Broken" in out
    assert "(invalid config:" in out


def test_register_info_export_import(home, tmp_path, files, capsys):
    model, config = files
    code, out, err = run(capsys, "models", "register", "Mine", str(config),
                         "--model-file", str(model))
    assert code == 0, err
    assert "Mine" in out
    assert (home / "models" / "Mine.pth").is_file()

    code, out, _ = run(capsys, "models", "info", "Mine")
    assert code == 0
    assert "Model: Mine (user)" in out
    assert "Parameters: 40" in out
    assert "divisible by 16" in out
    assert "1001" in out

    code, out, _ = run(capsys, "models", "info", "Mine", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["num_params"] == 40
    assert info["cached"] is True

    bundle = tmp_path / "Mine.empanada"
    code, out, err = run(capsys, "models", "export", "Mine", str(bundle))
    assert code == 0, err
    assert zipfile.is_zipfile(bundle)

    code, out, err = run(capsys, "models", "import", str(bundle), "--name", "Copy")
    assert code == 0, err
    assert "Copy" in out
    code, out, _ = run(capsys, "models", "list")
    assert "Copy" in out
    assert "Mine" in out


def test_register_existing_name(home, files, capsys):
    model, config = files
    assert run(capsys, "models", "register", "Dup", str(config), "--model-file",
               str(model))[0] == 0
    code, _, err = run(capsys, "models", "register", "Dup", str(config), "--model-file",
                       str(model))
    assert code == 2
    assert "--overwrite" in one_line_error(err)
    code, _, err = run(capsys, "models", "register", "Dup", str(config), "--model-file",
                       str(model), "--overwrite")
    assert code == 0, err


@pytest.mark.parametrize(("argv", "needle"), [
    (["models", "info", "Nope"], "available models: MitoLite_v1, MitoNet_v1"),
    (["models", "register", "X", "missing.yaml"], "missing.yaml"),
    (["models", "register", "bad name", "c.yaml"], "invalid model name"),
    (["models", "import", "missing.empanada"], "bundle not found"),
    (["models", "export", "MitoNet_v1", "out.zip"], ".empanada"),
])
def test_input_errors_exit_2(home, tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in one_line_error(err)


def test_invalid_config_exits_2(home, tmp_path, files, capsys):
    model, config = files
    data = yaml.safe_load(config.read_text())
    data["padding_factor"] = "big"
    config.write_text(yaml.safe_dump(data))
    code, _, err = run(capsys, "models", "register", "X", str(config), "--model-file",
                       str(model))
    assert code == 2
    line = one_line_error(err)
    assert str(config) in line
    assert "padding_factor" in line


def test_bad_bundle_exits_2(home, tmp_path, capsys):
    bundle = tmp_path / "b.empanada"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("../b.yaml", "x")
    code, _, err = run(capsys, "models", "import", str(bundle))
    assert code == 2
    assert "outside the bundle" in one_line_error(err)


def test_import_needs_force(home, tmp_path, files, capsys):
    model, config = files
    run(capsys, "models", "register", "Mine", str(config), "--model-file", str(model))
    bundle = tmp_path / "Mine.empanada"
    run(capsys, "models", "export", "Mine", str(bundle))
    code, _, err = run(capsys, "models", "import", str(bundle))
    assert code == 2
    assert "--force" in one_line_error(err)
    assert run(capsys, "models", "import", str(bundle), "--force")[0] == 0


def test_runtime_failure_exits_1(home, tmp_path, files, capsys):
    _, config = files
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.pth"
    assert run(capsys, "models", "register", "Web", str(config), "--model-file", url)[0] == 0
    code, _, err = run(capsys, "models", "export", "Web", str(tmp_path / "w.empanada"))
    assert code == 1
    line = one_line_error(err)
    assert url in line
    assert "offline" in line


def test_usage(home, capsys):
    code, _, err = run(capsys)
    assert code == 2
    assert "usage: empanada" in err
    code, _, err = run(capsys, "models")
    assert code == 2
    assert "usage: empanada models" in err
    code, _, err = run(capsys, "models", "frobnicate")
    assert code == 2
    assert "invalid choice" in err
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "models" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.startswith("empanada ")


class FakeEntryPoint:
    def __init__(self, name, func, value="fake.module:register"):
        self.name, self.value, self._func = name, value, func

    def load(self):
        return self._func


def test_command_groups_from_entry_points(home, capsys, monkeypatch):
    def register_hello(subparsers):
        p = subparsers.add_parser("hello", help="say hello")
        p.add_argument("--who", default="world")
        p.set_defaults(func=lambda args: print(f"hello {args.who}") or 0)

    def broken(subparsers):
        raise ImportError("missing dependency")

    def clash(subparsers):
        raise AssertionError("a plugin named like a built-in group must be skipped")

    monkeypatch.setattr(cli, "_command_entry_points", lambda: [
        FakeEntryPoint("hello", register_hello), FakeEntryPoint("broken", broken),
        FakeEntryPoint("models", clash),
    ])
    code, out, err = run(capsys, "hello", "--who", "mito")
    assert code == 0
    assert out.strip() == "hello mito"
    assert "skipped command group 'broken'" in err
    assert "missing dependency" in err
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    assert "MitoNet_v1" in out


def test_console_entry_point_runs(home, tmp_path):
    env = dict(os.environ, EMPANADA_HOME=str(home))
    proc = subprocess.run([sys.executable, "-m", "empanada_models.cli", "models", "list"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "MitoNet_v1" in proc.stdout


def test_console_script_is_declared():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts["empanada"] == "empanada_models.cli:main"


def test_export_over_an_existing_file_exits_2(home, tmp_path, capsys):
    out = tmp_path / "taken.empanada"
    out.write_bytes(b"keep")
    code, _, err = run(capsys, "models", "export", "MitoNet_v1", str(out))
    assert code == 2
    assert "--force" in one_line_error(err)
    assert out.read_bytes() == b"keep"


def test_info_counts_mitonet_parameters_from_the_architecture(capsys):
    """Without downloaded weights, info counts the architecture in the config's MODEL block."""
    from empanada_models.cli import main

    assert main(["models", "info", "MitoNet_v1"]) == 0
    assert "Parameters: 55,158,486" in capsys.readouterr().out
    assert main(["models", "info", "MitoNet_v1_mini", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_params"] == 27_350_786
    assert info["num_params_from"] == "architecture"
