"""Ctrl-C during a long call raises KeyboardInterrupt and leaves the store whole."""

import os
import signal
import subprocess
import sys

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


def store_state(path):
    """Every file of the store except its packs' data, with its bytes: refs,
    manifests, the audit log. Packs are compared by name."""
    state = {}
    for d, _, fs in os.walk(path):
        for f in fs:
            p = os.path.join(d, f)
            rel = os.path.relpath(p, path)
            if rel.split(os.sep)[0] in ("packs", "tmp"):
                state[rel] = None
            else:
                with open(p, "rb") as h:
                    state[rel] = h.read()
    return state


CHILD = r"""
import sys, tdelta
store = tdelta.Store(sys.argv[1])
def cb(phase, done, total):
    print("progress", phase, done, total, flush=True)
try:
    store.pack(sys.argv[2], message="big", progress=cb)
    print("done", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_sigint_to_a_process_packing_leaves_the_store_as_before(tmp_path, rng):
    store = tdelta.Store.init(tmp_path / "s")
    save_file({"w": rng.standard_normal((100, 100)).astype(np.float32)}, tmp_path / "small.safetensors")
    store.pack(tmp_path / "small.safetensors", message="first")
    before = store_state(store.path)
    # 256 MB of noise: several pack windows, seconds of encoding.
    save_file({f"w{i}": rng.standard_normal((2048, 2048)).astype(np.float32) for i in range(16)},
              tmp_path / "big.safetensors")
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(store.path), str(tmp_path / "big.safetensors")],
                         stdout=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    assert first.startswith("progress packing"), first
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0
    assert out.splitlines()[-1] == "interrupted", out
    # No manifest, no ref moved, no audit entry, no pack left behind.
    assert store_state(store.path) == before
    store.refresh()
    rep = store.verify()
    assert rep.ok and len(rep.versions) == 1
    assert len(store.log()) == 1


def test_ctrl_c_during_restore_leaves_nothing_at_the_target(tmp_path, rng):
    store = tdelta.Store.init(tmp_path / "s")
    # 256 MB of noise: the restore runs long after the first progress report.
    save_file({f"w{i}": rng.standard_normal((2048, 2048)).astype(np.float32) for i in range(16)},
              tmp_path / "m.safetensors")
    store.pack(tmp_path / "m.safetensors")
    out = tmp_path / "out.safetensors"
    with pytest.raises(KeyboardInterrupt):
        store.restore("HEAD", out, progress=sigint_once())
    # Stopped between blocks: nothing at the target and no staging left.
    # (Had every block already been written when the signal was seen, the
    # restore would land whole and then raise: never a partial file.)
    if out.exists():
        assert out.read_bytes() == (tmp_path / "m.safetensors").read_bytes()
        assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "out.safetensors", "s"]
    else:
        assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "s"]
