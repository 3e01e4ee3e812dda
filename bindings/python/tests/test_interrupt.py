"""Ctrl-C during a long call raises KeyboardInterrupt and leaves the store whole."""

import os
import signal

import numpy as np
import pytest
from safetensors.numpy import save_file

import tdelta


def sigint_once():
    sent = []

    def cb(phase, done, total):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    return cb


def test_ctrl_c_during_load(tmp_path, rng):
    store = tdelta.Store.init(tmp_path / "s")
    save_file({f"w{i}": rng.standard_normal((1000, 1000)).astype(np.float32) for i in range(8)},
              tmp_path / "m.safetensors")
    store.pack(tmp_path / "m.safetensors")
    with pytest.raises(KeyboardInterrupt):
        store.load(progress=sigint_once())
    assert store.verify().ok
    assert len(store.load()) == 8


def test_ctrl_c_during_pack_leaves_no_half_version(tmp_path, rng):
    store = tdelta.Store.init(tmp_path / "s")
    save_file({f"w{i}": rng.standard_normal((1000, 1000)).astype(np.float32) for i in range(8)},
              tmp_path / "m.safetensors")
    with pytest.raises(KeyboardInterrupt):
        store.pack(tmp_path / "m.safetensors", progress=sigint_once())
    # The pack either landed whole or not at all.
    rep = store.verify()
    assert rep.ok and len(rep.versions) <= 1
    for v in rep.versions:
        assert store.load(v["id"])["w0"].shape == (1000, 1000)
    assert not [f for f in os.listdir(os.path.join(store.path, "tmp"))]
