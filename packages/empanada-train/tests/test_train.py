import csv

import numpy as np
import pytest
import tifffile
import torch
import yaml

import empanada_models as em
from empanada_core.testing import data_path
from empanada_train._config import (
    TrainConfig,
    TrainConfigError,
    merge_configs,
    parse_label_spec,
)
from empanada_train._loop import load_checkpoint, write_log_csv, write_log_plot
from empanada_train._patches import pick_patches_from_file
from empanada_train._setup import resolve_classes
from empanada_train._store import store_patches
from empanada_train._train import load_pretraining, train

# A small, fast architecture: RegNetY-200MF at output stride 32, narrow decoder.
TINY_MODEL = {
    "arch": "PanopticDeepLabPR", "encoder": "regnety_200mf", "stage4_stride": 32,
    "decoder_channels": 32, "low_level_channels_project": [16], "train_num_points": 128,
    "subdivision_num_points": 512,
}


def tiny_config(train_dir, model_dir, **train):
    return {
        "model_name": "TinyNet",
        "MODEL": dict(TINY_MODEL),
        "TRAIN": {"train_dir": str(train_dir), "model_dir": str(model_dir), "batch_size": 4,
                  "patch_size": 64, "iterations": 4, **train},
    }


def write_blob_dataset(root, n=6, size=64, seed=0, panoptic=False):
    """Dark blobs (instances) on a bright noisy background, as <root>/src/images|masks."""
    rng = np.random.default_rng(seed)
    (root / "src" / "images").mkdir(parents=True)
    (root / "src" / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = rng.normal(190, 10, (size, size))
        mask = np.zeros((size, size), np.uint32)
        if panoptic:  # class 1 (semantic): a band; class 2 (instance): blobs
            mask[: size // 6] = 1000
            image[: size // 6] -= 60
        for k in range(3):
            cy, cx = rng.integers(14, size - 14, 2)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(25, 80)
            mask[blob & (mask == 0)] = (2000 + k + 1) if panoptic else k + 1
            image[blob] -= 110
        tifffile.imwrite(root / "src" / "images" / f"im{i}.tif",
                         np.clip(image, 0, 255).astype(np.uint8))
        tifffile.imwrite(root / "src" / "masks" / f"im{i}.tif", mask)
    return root


@pytest.fixture
def blobs(tmp_path):
    return write_blob_dataset(tmp_path / "blobs")


# ------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def lucchi(tmp_path_factory):
    root = data_path("lucchi_epfl_hippocampus")
    out = tmp_path_factory.mktemp("lucchi")
    # 2D patches (stack mode) with their paired labels, as `empanada patches pick --labels`
    patches = pick_patches_from_file(root / "images.tif", labels=root / "mito_instances_2d.tif",
                                     patch_size=64, n_patches=20, mode="stack", seed=3,
                                     source="lucchi")
    store_patches(patches[:16], [p.labels for p in patches[:16]], out, "train")
    store_patches(patches[16:], [p.labels for p in patches[16:]], out, "eval")
    return out


@pytest.mark.realdata
def test_short_training_on_lucchi_loss_falls_and_the_model_segments(lucchi, home, tmp_path):
    from empanada_infer import Segmenter

    seen = []
    cfg = tiny_config(lucchi / "train", tmp_path / "out", iterations=30, seed=0)
    cfg["EVAL"] = {"eval_dir": str(lucchi / "eval"), "eval_every": 15}
    result = train(cfg, progress=seen.append)
    history = result.history
    assert len(history) == 30 == result.iterations
    total = [row["total_loss"] for row in history]
    semantic = [row["ce"] + row["pointrend_ce"] for row in history]
    # the offset term is noisy (patches with and without mitochondria, one batch can
    # spike 4x): the median of 6 batches
    assert np.median(total[-6:]) < 0.7 * np.median(total[:6])
    assert np.mean(semantic[-6:]) < 0.8 * np.mean(semantic[:6])
    # validation ran at 15 and 30 with the empanada-core scores
    evals = [info for info in seen if info["phase"] == "eval"]
    assert [e["iteration"] for e in evals] == [15, 30]
    assert set(evals[-1]["metrics"]) >= {"semantic_iou", "f1_50", "pq", "eval_loss"}
    assert result.best["metric"] == "pq"
    # outputs: TorchScript + original-schema config, CSV log, checkpoints
    assert result.model_path.is_file()
    assert result.config_path.is_file()
    assert result.best_checkpoint_path.is_file()
    rows = list(csv.DictReader(result.log_path.open()))
    assert len(rows) == 30
    assert rows[14]["pq"] != ""
    assert rows[0]["pq"] == ""
    written = yaml.safe_load(result.config_path.read_text())
    assert written["padding_factor"] == 32
    assert written["labels"] == [1]
    assert written["thing_list"] == [1]
    assert written["MODEL"]["encoder"] == "regnety_200mf"
    assert written["FINETUNE"]["criterion"] == "PanopticLoss"
    assert written["FINETUNE"]["engine_params"]["label_divisor"] == 1000
    # registered in one step: the registry loads it and the Segmenter runs it
    assert "TinyNet" in em.list_models()
    image = tifffile.imread(data_path("lucchi_epfl_hippocampus") / "images.tif", key=0)
    labels = Segmenter.from_registry("TinyNet", device="cpu").segment_image(image[:100, :130])
    assert labels.shape == (100, 130)
    assert labels.dtype == np.uint32


# ------------------------------------------------------------- synthetic runs


def test_resume_continues_the_iteration_count(blobs, tmp_path):
    cfg = tiny_config(blobs, tmp_path / "out", iterations=4, save_every=1)
    calls = []
    stopped = train(cfg, register=False, should_stop=lambda: len(calls) >= 2,
                    progress=lambda info: calls.append(info) if info["phase"] == "train"
                    else None)
    assert stopped.stopped
    assert stopped.iterations == 2
    assert stopped.model_path is None
    state = load_checkpoint(stopped.checkpoint_path)  # torch.load(weights_only=True)
    assert state["iteration"] == 2
    assert len(state["history"]) == 2
    seen = []
    result = train(cfg, register=False, resume=stopped.checkpoint_path,
                   progress=lambda info: seen.append(info["iteration"])
                   if info["phase"] == "train" else None)
    assert seen == [3, 4]
    assert result.iterations == 4
    assert not result.stopped
    assert [row["iteration"] for row in result.history] == [1, 2, 3, 4]
    assert result.history[:2] == stopped.history
    assert result.model_path.is_file()
    # a checkpoint of another plan is refused with the reason
    with pytest.raises(ValueError, match="made for 4 iterations"):
        train(tiny_config(blobs, tmp_path / "out", iterations=6), register=False,
              resume=stopped.checkpoint_path)


def test_panoptic_training_from_a_label_spec(tmp_path, home):
    data = write_blob_dataset(tmp_path / "pan", n=4, panoptic=True)
    spec = parse_label_spec("1,band,semantic\n2,blob,instance")
    cfg = tiny_config(data, tmp_path / "out", iterations=2)
    cfg["model_name"] = "PanNet"
    cfg["DATASET"] = {"labels": list(spec.labels), "class_names": spec.class_names,
                      "thing_list": list(spec.thing_list), "label_divisor": 1000}
    cfg["EVAL"] = {"eval_dir": str(data)}
    result = train(cfg)
    assert set(result.metrics["per_class"]) == {"band", "blob"}
    assert result.metrics["per_class"]["band"]["f1_50"] is None  # a semantic class
    config = em.get_model_config("PanNet")
    assert config.labels == (1, 2)
    assert config.thing_list == (2,)
    assert config.arch_params["num_classes"] == 3  # background + 2 classes (softmax)
    assert config.finetune["dataset_class"] == "PanopticDataset"
    out = em.load_model("PanNet")(torch.zeros(1, 1, 64, 64), 2, True)
    assert out["sem_logits"].shape == (1, 3, 64, 64)


def test_encoder_initialised_from_a_checkpoint(blobs, tmp_path):
    encoder = em.build_encoder("resnet18", output_stride=32)
    with torch.no_grad():
        for p in encoder.parameters():
            p.fill_(0.01)
    ckpt = tmp_path / "enc.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in encoder.state_dict().items()},
                "norms": [0.4, 0.2]}, ckpt)
    cfg = TrainConfig.from_dict(tiny_config(blobs, tmp_path / "out", iterations=1,
                                            encoder_pretraining=str(ckpt),
                                            finetune_layer="stage4"),
                                overrides={"MODEL.encoder": "resnet18"})
    kwargs = {k: v for k, v in cfg.model.items() if k != "arch"}
    model = em.build_model("PanopticDeepLabPR", **{**kwargs, "num_classes": 1})
    norms = load_pretraining(cfg, model)
    assert norms == pytest.approx((0.4, 0.2))
    assert float(model.encoder.layer2[0].conv1.weight.detach().mean()) == pytest.approx(0.01)
    # a whole run: the checkpoint's norms go into the exported config
    result = train(cfg, register=False)
    assert result.iterations == 1
    written = yaml.safe_load(result.config_path.read_text())
    assert written["norms"] == pytest.approx({"mean": 0.4, "std": 0.2})
    assert written["MODEL"]["encoder"] == "resnet18"
    # weights of another encoder are refused
    torch.save(em.build_encoder("regnety_200mf").state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="none of the weights"):
        load_pretraining(cfg.updated({"TRAIN.encoder_pretraining": str(tmp_path / "other.pth")}),
                         model)


def test_encoder_weights_from_a_url_are_downloaded_once(blobs, tmp_path, monkeypatch):
    import http.server
    import threading

    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    encoder = em.build_encoder("resnet18", output_stride=32)
    with torch.no_grad():
        for p in encoder.parameters():
            p.fill_(0.02)
    torch.save(encoder.state_dict(), tmp_path / "enc.pth")
    body = (tmp_path / "enc.pth").read_bytes()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/weights/enc.pth"
        cfg = TrainConfig.from_dict(tiny_config(blobs, tmp_path / "out", iterations=1,
                                                encoder_pretraining=url),
                                    overrides={"MODEL.encoder": "resnet18"})
        kwargs = {k: v for k, v in cfg.model.items() if k != "arch"}
        for _ in range(2):
            model = em.build_model("PanopticDeepLabPR", **{**kwargs, "num_classes": 1})
            assert load_pretraining(cfg, model) is None
            assert float(model.encoder.layer3[0].conv1.weight.detach().mean()) == \
                pytest.approx(0.02)
        assert hits == ["/weights/enc.pth"]  # the second run used the cache
    finally:
        httpd.shutdown()
        httpd.server_close()
    offline = cfg.updated({"TRAIN.encoder_pretraining": "http://127.0.0.1:9/cem.pth"})
    with pytest.raises(em.ModelDownloadError, match="encoder weights.*local path"):
        load_pretraining(offline, model)


# ------------------------------------------------------------------ configs


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(TrainConfigError, match=r"unknown key `TRAIN.itterations`"):
        TrainConfig.from_dict({"TRAIN": {"itterations": 5}})
    with pytest.raises(TrainConfigError, match=r"`TRAIN.batch_size` must be an integer >= 1"):
        TrainConfig.from_dict({"TRAIN": {"batch_size": "16"}})
    with pytest.raises(TrainConfigError, match=r"`MODEL.arch` must be one of"):
        TrainConfig.from_dict({"MODEL": {"arch": "UNet"}})
    with pytest.raises(TrainConfigError, match=r"unknown key `MODEL.decoder_chanels`"):
        TrainConfig.from_dict({"MODEL": {"decoder_chanels": 3}})
    with pytest.raises(TrainConfigError, match=r"`EVAL.engine_params.nms_threshold`"):
        TrainConfig.from_dict({"EVAL": {"engine_params": {"nms_threshold": 2}}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAIN:\n  augmentations:\n    - {aug: ElasticTransform}\n")
    with pytest.raises(TrainConfigError, match=r"bad.yaml.*ElasticTransform"):
        TrainConfig.from_yaml(bad)


def test_custom_yaml_overrides_defaults_with_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "TRAIN:\n  batch_size: 8\n  schedule_params: {max_lr: 0.001}\n"
        "MODEL: {arch: PanopticBiFPNPR, encoder: resnet18}\n")
    (tmp_path / "child.yaml").write_text(
        "BASE: base.yaml\nmodel_name: child\nTRAIN:\n  patch_size: 128\n"
        "  augmentations:\n    - {aug: RandomScale, scale_limit: [-0.9, 1]}\n"
        "    - {aug: Rotate, limit: 90}\n")
    cfg = TrainConfig.from_yaml(tmp_path / "child.yaml", overrides={"TRAIN.iterations": 7})
    assert cfg.train["batch_size"] == 8
    assert cfg.train["patch_size"] == 128
    assert cfg.train["schedule_params"] == {**cfg.train["schedule_params"], "max_lr": 0.001,
                                            "pct_start": 0.3}
    assert cfg.train["iterations"] == 7
    assert cfg.train["optimizer_params"]["weight_decay"] == 0.1
    assert cfg.model["fpn_dim"] == 128
    assert "decoder_channels" not in cfg.model
    assert cfg.train["augmentations"]["scale_range"] == pytest.approx([0.1, 2.0])
    assert cfg.train["augmentations"]["rotate_limit"] == 90
    assert cfg.train["augmentations"]["brightness"] == 0  # not in the list: off
    switched = cfg.updated({"MODEL.arch": "PanopticDeepLab"})
    assert "fpn_dim" not in switched.model
    assert switched.model["encoder"] == "resnet18"
    assert merge_configs({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}


@pytest.mark.parametrize(("spec", "match"), [
    ("1,mito", "expected 3 comma-separated items"),
    ("x,mito,instance", "class id 'x' must be an integer >= 1"),
    ("1,mito,instance\n1,er,semantic", "class id 1 is given twice"),
    ("1,mito,object", "must be 'semantic' or 'instance'"),
    ("1,mito,instance\n3,er,semantic", "1..2 without gaps"),
    ("# nothing\n", "holds no classes"),
])
def test_label_spec_errors(spec, match):
    with pytest.raises(TrainConfigError, match=match):
        parse_label_spec(spec)


def test_label_spec_and_classes():
    spec = parse_label_spec(" 1, er ,semantic ; 2,mito,INSTANCE ;3,nucleus,semantic # c")
    assert spec.labels == (1, 2, 3)
    assert spec.thing_list == (2,)
    assert spec.class_names == {1: "er", 2: "mito", 3: "nucleus"}
    cfg = TrainConfig.from_dict({"DATASET": {"labels": [1, 2, 3], "thing_list": [2],
                                             "class_names": spec.class_names,
                                             "label_divisor": 500}})
    classes = resolve_classes(cfg)
    assert (classes.num_classes, classes.dataset_class, classes.label_divisor) == \
        (4, "PanopticDataset", 500)
    single = resolve_classes(TrainConfig.from_dict({}))
    assert (single.num_classes, single.dataset_class) == (1, "SingleClassInstanceDataset")
    with pytest.raises(TrainConfigError, match="MODEL.num_classes"):
        resolve_classes(cfg.updated({"MODEL.num_classes": 2}))
    with pytest.raises(TrainConfigError, match="class_names"):
        resolve_classes(cfg.updated({"DATASET.class_names": {1: "er"}}))
    with pytest.raises(TrainConfigError, match="SingleClassInstanceDataset needs"):
        resolve_classes(cfg.updated({"TRAIN.dataset_class": "SingleClassInstanceDataset"}))


def test_run_errors_before_training(blobs, tmp_path, home):
    cfg = tiny_config(blobs, tmp_path / "out")
    with pytest.raises(TrainConfigError, match="model_name"):
        train({**cfg, "model_name": None})
    with pytest.raises(TrainConfigError, match="TRAIN.patch_size` 48 must be a multiple of 32"):
        train(cfg, overrides={"TRAIN.patch_size": 48}, register=False)
    with pytest.raises(ValueError, match="fewer than the batch size 16"):
        train(cfg, overrides={"TRAIN.batch_size": 16}, register=False)
    with pytest.raises(FileNotFoundError, match="TRAIN.train_dir"):
        train(cfg, overrides={"TRAIN.train_dir": str(tmp_path / "nope")}, register=False)
    with pytest.raises(TrainConfigError, match="TRAIN.train_dir` is missing"):
        train(cfg, overrides={"TRAIN.train_dir": None}, register=False)
    em.register_model("TinyNet", {"model": "x.pth", "norms": {"mean": 0.5, "std": 0.1},
                                  "padding_factor": 16, "thing_list": [1], "labels": [1],
                                  "class_names": {1: "a"}},
                      model_file=_dummy_weights(tmp_path))
    with pytest.raises(em.ModelExistsError, match="TinyNet"):
        train(cfg)
    assert not (tmp_path / "out").exists()  # nothing ran


def _dummy_weights(tmp_path):
    # a real TorchScript file: registration checks that weights load
    from empanada_models.testing import write_test_model

    write_test_model(tmp_path / "dummy", "Dummy")
    return tmp_path / "dummy" / "Dummy.pth"


def test_log_csv_and_optional_plot(tmp_path):
    rows = [{"iteration": i, "lr": 1e-3, "total_loss": 2.0 / i, "ce": 0.5, "mse": 0.0,
             "l1": 1.0} for i in range(1, 5)]
    rows[-1].update(semantic_iou=0.5, f1_50=0.25, pq=0.2, eval_loss=1.0)
    lines = write_log_csv(rows, tmp_path / "log.csv").read_text().splitlines()
    assert lines[0].startswith("iteration,lr,total_loss,ce,mse,l1,pointrend_ce,eval_loss")
    assert lines[1] == "1,0.001,2,0.5,0,1,,,,,"
    assert lines[4].endswith(",1,0.5,0.25,0.2")
    plot = write_log_plot(rows, tmp_path / "log.png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert plot is None  # optional: the CSV has everything
    else:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
