"""The Trainer callback, driven by a fake trainer loop shaped like
transformers' (events with args, state, control)."""

import os
import sys
from types import SimpleNamespace

import numpy as np
from safetensors.numpy import save_file

import tdelta
from tdelta.integrations import TrainerCallback


def fake_trainer(tmp_path, callback, losses):
    """Saves a checkpoint per eval, as the HF Trainer does, and fires the
    events its CallbackHandler fires."""
    args = SimpleNamespace(output_dir=str(tmp_path / "out"))
    state = SimpleNamespace(global_step=0, log_history=[])
    control = SimpleNamespace()
    w = np.zeros((64, 64), np.float32)
    for event in ("on_init_end", "on_train_begin"):
        assert getattr(callback, event)(args, state, control) is None
    for i, loss in enumerate(losses):
        state.global_step = (i + 1) * 10
        w[i] += 1.0
        callback.on_step_end(args, state, control)
        state.log_history.append({"loss": loss + 0.1, "step": state.global_step})
        state.log_history.append({"eval_loss": loss, "epoch": i + 1.0, "step": state.global_step})
        ckpt = tmp_path / "out" / f"checkpoint-{state.global_step}"
        ckpt.mkdir(parents=True)
        save_file({"w": w}, ckpt / "model.safetensors")
        (ckpt / "trainer_state.json").write_text("{}")
        callback.on_save(args, state, control)
    callback.on_train_end(args, state, control)


def test_every_checkpoint_is_packed_and_the_best_tagged(tmp_path):
    store = tdelta.Store.init(tmp_path / "store")
    cb = TrainerCallback(store, metric="eval_loss")
    fake_trainer(tmp_path, cb, [3.0, 2.0, 2.5, 1.5, 1.7])
    log = store.log()
    assert [e.message for e in log] == ["step 50", "step 40", "step 30", "step 20", "step 10"]
    assert [e.meta["step"] for e in log] == ["50", "40", "30", "20", "10"]
    assert log[1].metrics == {"step": 40, "loss": 1.6, "eval_loss": 1.5, "epoch": 4.0}
    assert store.resolve("best") == log[1].id
    assert cb.last.id == log[0].id and cb.best == 1.5
    # Each version is the checkpoint: its tensor is the one saved at that step.
    w = store.open("best").get_tensor("w")
    assert w[:4].sum() == 4 * 64 and w[4:].sum() == 0


def test_greater_is_better_and_pack_options(tmp_path):
    store = tdelta.Store.init(tmp_path / "store")
    cb = TrainerCallback(str(tmp_path / "store"), metric="eval_loss", greater_is_better=True, best_tag="top",
                         exclude=["trainer_state.json"], message="ckpt {step} loss {eval_loss}")
    fake_trainer(tmp_path, cb, [1.0, 3.0, 2.0])
    assert store.resolve("top") == store.log()[1].id
    assert store.log()[0].message == "ckpt 30 loss 2.0"
    assert store.open("top").files() == ["model.safetensors"]
    assert [f["path"] for f in store.show("top").manifest.files] == ["model.safetensors"]


def test_the_module_does_not_import_transformers():
    assert "transformers" not in sys.modules


def test_the_example_training_loop_runs(tmp_path):
    import subprocess

    ex = os.path.join(os.path.dirname(__file__), "..", "examples", "train_loop.py")
    r = subprocess.run([sys.executable, ex, str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("-> version") == 5 and "best:" in r.stdout
    store = tdelta.Store(tmp_path / "run" / "store")
    assert store.show("best").manifest.metrics["step"] == 500
