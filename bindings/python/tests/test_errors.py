"""Every error class, raised where its kind of failure happens."""

import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import tdelta


def test_classes_derive_from_tdelta_error():
    for c in (tdelta.NotFound, tdelta.Conflict, tdelta.Corrupt, tdelta.Locked, tdelta.InvalidInput):
        assert issubclass(c, tdelta.TdeltaError)
    assert issubclass(tdelta.TdeltaError, Exception)


def test_not_found(tmp_path, store):
    with pytest.raises(tdelta.NotFound, match="no tdelta store"):
        tdelta.Store(tmp_path / "nothing")
    with pytest.raises(tdelta.NotFound, match="no versions yet"):
        store.open()
    save_file({"w": np.zeros(4, np.float32)}, tmp_path / "m.safetensors")
    store.pack(tmp_path / "m.safetensors")
    with pytest.raises(tdelta.NotFound, match="unknown ref"):
        store.load("nope")
    with pytest.raises(tdelta.NotFound, match="no tensor `x`"):
        store.open().get_tensor("x")
    with pytest.raises(tdelta.NotFound):
        store.pack(tmp_path / "missing.safetensors")


def test_conflict(tmp_path, store):
    with pytest.raises(tdelta.Conflict, match="already exists"):
        tdelta.Store.init(store.path)
    # A tag that points elsewhere is not moved without force.
    for i in range(2):
        save_file({"w": np.full(4, i, np.float32)}, tmp_path / "m.safetensors")
        store.pack(tmp_path / "m.safetensors")
    store.tag("stable", "HEAD~1")
    with pytest.raises(tdelta.Conflict, match="tag `stable`"):
        store.tag("stable", "HEAD")


def test_what_a_version_lacks_is_not_found(tmp_path, store):
    save_file({"w": np.zeros(4, np.float32)}, tmp_path / "m.safetensors")
    store.pack(tmp_path / "m.safetensors")
    with pytest.raises(tdelta.NotFound, match="nope"):
        store.restore("HEAD", tmp_path / "out", files=["nope"])


def test_invalid_input(tmp_path, store):
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{oops}  ")
    with pytest.raises(tdelta.InvalidInput, match="bad.safetensors"):
        store.pack(tmp_path / "bad.safetensors")
    save_file({"w": np.zeros(4, np.float32)}, tmp_path / "m.safetensors")
    with pytest.raises(tdelta.InvalidInput, match="invalid policy `sideways`"):
        store.pack(tmp_path / "m.safetensors", policy="sideways")
    with pytest.raises(tdelta.InvalidInput, match="cannot store dtype"):
        store.save({"s": np.array(["text"])})
    with pytest.raises(tdelta.InvalidInput, match="framework"):
        store.pack(tmp_path / "m.safetensors")
        store.load(framework="jax")
    with pytest.raises(tdelta.InvalidInput, match="scheme"):
        tdelta.Store("gs://bucket/store")
    with pytest.raises(tdelta.InvalidInput, match="invalid ref name"):
        store.tag("bad name")


def test_locked(tmp_path, store):
    save_file({"w": np.zeros(4, np.float32)}, tmp_path / "m.safetensors")
    # A lock held by a live process (this one), with no wait.
    import fcntl

    fd = os.open(os.path.join(store.path, "lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(tdelta.Locked, match="locked"):
            tdelta.Store(store.path, lock_wait=0).pack(tmp_path / "m.safetensors")
    finally:
        os.close(fd)
    with pytest.raises(tdelta.InvalidInput, match="lock_wait"):
        tdelta.Store(store.path, lock_wait=-1)


def test_corrupt(tmp_path, store):
    w = np.arange(100_000, dtype=np.float32)
    save_file({"w": w}, tmp_path / "m.safetensors")
    store.pack(tmp_path / "m.safetensors")
    packs = os.path.join(store.path, "packs")
    for name in os.listdir(packs):
        p = os.path.join(packs, name)
        data = bytearray(open(p, "rb").read())
        if len(data) > 4096:
            data[len(data) // 2] ^= 0xFF
            open(p, "wb").write(bytes(data))
    with pytest.raises(tdelta.Corrupt):
        tdelta.Store(store.path).load()
    assert not tdelta.Store(store.path).verify().ok
