import json
from importlib.metadata import EntryPoint

import numpy as np
import pytest
import tifffile
import yaml

import empanada_models.cli as models_cli
from empanada_models.cli import main
from empanada_train._store import load_dataset

OURS = {"train": "empanada_train.cli:register_train",
        "finetune": "empanada_train.cli:register_finetune",
        "patches": "empanada_train.cli:register_patches"}
TINY_MODEL = {
    "arch": "PanopticDeepLabPR", "encoder": "regnety_200mf", "stage4_stride": 32,
    "decoder_channels": 32, "low_level_channels_project": [16], "train_num_points": 128,
    "subdivision_num_points": 512,
}


@pytest.fixture(autouse=True)
def commands(monkeypatch):
    """The train commands even where the package's entry points are not installed."""
    installed = models_cli._command_entry_points()
    names = {ep.name for ep in installed}
    extra = [EntryPoint(name, value, models_cli.COMMAND_GROUP)
             for name, value in OURS.items() if name not in names]
    monkeypatch.setattr(models_cli, "_command_entry_points", lambda: installed + extra)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :128]
    image = rng.normal(190, 10, (96, 128))
    labels = np.zeros((96, 128), np.uint32)
    for k, (cy, cx) in enumerate([(20, 20), (30, 90), (70, 40), (75, 100), (50, 64)]):
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= 80
        labels[blob] = k + 1
        image[blob] -= 110
    tifffile.imwrite(tmp_path / "img.tif", np.clip(image, 0, 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(
        {"model_name": "CliNet", "MODEL": TINY_MODEL,
         "TRAIN": {"batch_size": 2, "patch_size": 64, "iterations": 3}}))
    return tmp_path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def pick_and_store(capsys, n=4):
    code, out, _ = run(capsys, "patches", "pick", "img.tif", "-o", "picks", "--labels",
                       "labels.tif", "--n", n, "--size", 32)
    assert code == 0, out
    code, out, _ = run(capsys, "patches", "store", "picks", "data", "ds")
    assert code == 0, out
    return "data/ds"


# ----------------------------------------------------------------------- help


@pytest.mark.parametrize(("argv", "options"), [
    (["train"], ["--train-dir", "--eval-dir", "--model-dir", "--name", "--iterations",
                 "--resume", "--labels", "--label-divisor", "--arch", "--encoder",
                 "--pretrained", "--layers", "--batch-size", "--patch-size", "--lr",
                 "--register", "--no-register", "--overwrite", "--quantize", "--quiet",
                 "--json", "--device", "--workers", "--seed", "--threads"]),
    (["finetune"], ["MODEL", "TRAIN_DIR", "--eval-dir", "--name", "--layers", "--iterations",
                    "--config", "--model-dir", "--batch-size", "--patch-size", "--resume",
                    "--register", "--quantize"]),
    (["patches", "pick"], ["IMAGE", "--output", "--labels", "--n", "--size", "--mode",
                           "--points", "--all-points", "--isotropic", "--level", "--seed"]),
    (["patches", "store"], ["PATCHES", "DATASET_DIR", "NAME", "--masks", "--source",
                            "--overwrite"]),
])
def test_help_documents_every_option(capsys, argv, options):
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0
    for option in options:
        assert option in out, option


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(("spec", "match"), [
    ("1,mito", "expected 3 comma-separated items"),
    ("1,er,semantic\n1,mito,instance", "class id 1 is given twice"),
    ("1,er,semantic\n2,mito,organelle", "must be 'semantic' or 'instance'"),
    ("1,er,semantic\n3,mito,instance", "without gaps"),
])
def test_bad_label_specs_exit_2(workdir, capsys, spec, match):
    (workdir / "labels.txt").write_text(spec)
    code, _, err = run(capsys, "train", "tiny.yaml", "--train-dir", "data", "--labels",
                       "labels.txt")
    assert code == 2
    assert match in err


@pytest.mark.parametrize("divisor", ["1", "0", "abc"])
def test_bad_label_divisors_exit_2(workdir, capsys, divisor):
    code, _, err = run(capsys, "train", "tiny.yaml", "--label-divisor", divisor)
    assert code == 2
    assert "--label-divisor" in err


def test_missing_directories_and_files_exit_2(workdir, capsys):
    code, _, err = run(capsys, "train", "tiny.yaml", "--train-dir", "nowhere")
    assert code == 2
    assert "TRAIN.train_dir" in err
    assert "nowhere" in err
    code, _, err = run(capsys, "train", "tiny.yaml")
    assert code == 2
    assert "--train-dir (TRAIN.train_dir in the config) is missing" in err
    code, _, err = run(capsys, "train", "missing.yaml", "--train-dir", ".")
    assert code == 2
    assert "training config not found" in err
    code, _, err = run(capsys, "finetune", "MitoNet_v1", "nowhere")
    assert code == 2
    assert "TRAIN_DIR not found" in err
    code, _, err = run(capsys, "train", "tiny.yaml", "--labels", "no_such_file.txt")
    assert code == 2
    assert "--labels" in err


def test_too_few_images_and_bad_config_exit_2(workdir, capsys):
    data = pick_and_store(capsys, n=2)
    code, _, err = run(capsys, "train", "tiny.yaml", "--train-dir", data, "--batch-size", 4)
    assert code == 2
    assert "holds 2 annotated images, fewer than the batch size 4" in err
    (workdir / "bad.yaml").write_text("TRAIN:\n  learning_rate: 0.1\n")
    code, _, err = run(capsys, "train", "bad.yaml", "--train-dir", data)
    assert code == 2
    assert "unknown key `TRAIN.learning_rate`" in err


def test_patches_store_needs_every_mask(workdir, capsys):
    code, _, _ = run(capsys, "patches", "pick", "img.tif", "-o", "picks", "--n", 2,
                     "--size", 32)
    assert code == 0
    (workdir / "picks" / "masks").mkdir()
    code, _, err = run(capsys, "patches", "store", "picks", "data", "ds")
    assert code == 2
    assert "no mask for" in err


# ------------------------------------------------------------------- smoke runs


def test_patches_pick_and_store_round_trip(workdir, capsys):
    data = pick_and_store(capsys, n=4)
    items = load_dataset(workdir / data)
    assert len(items) == 4
    assert {s for _, _, s in items} == {"img"}
    for image_path, mask_path, _ in items:
        assert tifffile.imread(image_path).shape == (32, 32)
        assert tifffile.imread(mask_path).dtype == np.uint32


def test_train_then_segment_then_finetune(workdir, capsys):
    data = pick_and_store(capsys, n=4)
    code, out, err = run(capsys, "train", "tiny.yaml", "--train-dir", data, "--eval-dir", data,
                         "--iterations", 3, "--quiet", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["iterations"] == 3
    assert summary["registered"] == "CliNet"
    assert summary["model"].endswith("CliNet.pth")
    assert summary["metrics"]["pq"] is not None
    # usable at once by `empanada segment --model NAME`
    code, _, err = run(capsys, "segment", "img.tif", "-o", "seg.tif", "--model", "CliNet",
                       "--quiet")
    assert code == 0, err
    labels = tifffile.imread(workdir / "seg.tif")
    assert labels.shape == (96, 128)
    assert labels.dtype == np.uint32
    # the same name again needs --overwrite
    code, _, err = run(capsys, "train", "tiny.yaml", "--train-dir", data, "--quiet")
    assert code == 2
    assert "--overwrite" in err
    # finetune the new model
    code, out, err = run(capsys, "finetune", "CliNet", data, "--iterations", 2,
                         "--batch-size", 2, "--patch-size", 64, "--layers", "stage4",
                         "--no-register", "--quiet")
    assert code == 0, err
    assert "trained 'CliNet_finetuned' for 2 iterations" in out
    assert (workdir / "CliNet_finetuned" / "CliNet_finetuned.pth").is_file()


def test_train_from_a_label_spec_and_resume(workdir, capsys):
    data = pick_and_store(capsys, n=4)
    code, out, err = run(capsys, "train", "tiny.yaml", "--train-dir", data, "--labels",
                         "1,blob,instance", "--label-divisor", 100, "--name", "Spec",
                         "--iterations", 2, "--no-register", "--quiet", "--json")
    assert code == 0, err
    summary = json.loads(out)
    written = yaml.safe_load(open(summary["config"]))
    assert written["FINETUNE"]["engine_params"]["label_divisor"] == 100
    assert written["class_names"] == {1: "blob"}
    # resuming a finished run continues at its last iteration (nothing left to do)
    code, out, err = run(capsys, "train", "tiny.yaml", "--train-dir", data, "--labels",
                         "1,blob,instance", "--label-divisor", 100, "--name", "Spec",
                         "--iterations", 2, "--no-register", "--quiet", "--json",
                         "--resume", summary["checkpoint"])
    assert code == 0, err
    assert json.loads(out)["iterations"] == 2


_KILLED_TRAINING = """
import os, signal, sys
import empanada_train._loop as engine
from empanada_models.cli import main

real, saved = engine.atomic_torch_save, []

def save_then_die(obj, path):
    real(obj, path)
    saved.append(path)
    if len(saved) == 2:  # killed right after its second checkpoint
        os.kill(os.getpid(), signal.SIGKILL)

engine.atomic_torch_save = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_training_killed_mid_run_resumes_from_a_whole_checkpoint(workdir, capsys):
    """kill -9 during training: the last checkpoint is complete and --resume finishes."""
    import os
    import signal
    import subprocess
    import sys

    from empanada_train._loop import load_checkpoint

    data = pick_and_store(capsys, n=4)
    (workdir / "every.yaml").write_text(yaml.safe_dump(
        {"model_name": "KillNet", "MODEL": TINY_MODEL,
         "TRAIN": {"batch_size": 2, "patch_size": 64, "iterations": 4, "save_every": 1}}))
    argv = ["train", "every.yaml", "--train-dir", data, "--labels", "1,blob,instance",
            "--name", "KillNet", "--no-register", "--quiet"]
    child = subprocess.run([sys.executable, "-c", _KILLED_TRAINING, *argv], cwd=workdir,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                           text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr
    checkpoints = list(workdir.rglob("KillNet_checkpoint.pth.tar"))
    assert len(checkpoints) == 1
    assert load_checkpoint(checkpoints[0])["iteration"] == 2  # whole, readable
    assert not [p for p in checkpoints[0].parent.iterdir() if p.name.endswith(".tmp")]
    code, out, err = run(capsys, *argv, "--resume", checkpoints[0], "--json")
    assert code == 0, err
    assert json.loads(out)["iterations"] == 4
