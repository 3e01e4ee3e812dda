"""Round trips against safetensors.numpy: every dtype, shards, metadata."""

import json
import os
import threading

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import tdelta
from conftest import run_cli

DTYPES = [
    np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.float16, np.int32, np.uint32,
    np.float32, np.float64, np.int64, np.uint64, ml_dtypes.bfloat16,
]
# safetensors.numpy cannot write these: they go through store.save.
FP8 = [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]


def tensors_of_every_dtype(rng, dtypes=DTYPES):
    out = {}
    for i, dt in enumerate(dtypes):
        raw = rng.integers(0, 256, size=(37, 129) if i % 2 else (5000,), dtype=np.uint8)
        dt = np.dtype(dt)
        n = raw.size // dt.itemsize * dt.itemsize
        a = np.frombuffer(raw.reshape(-1)[:n].tobytes(), dtype=dt) if dt != np.bool_ else raw.reshape(-1) % 2 == 1
        out[f"t{i}.{dt.name}"] = a
    out["scalar"] = np.array(2.5, dtype=np.float32)
    out["empty"] = np.zeros((0, 3), dtype=np.float32)
    return out


def equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def test_every_dtype_round_trips_through_pack_open_and_load(store, tmp_path, rng):
    t = tensors_of_every_dtype(rng)
    save_file(t, tmp_path / "m.safetensors", metadata={"format": "np", "step": "7"})
    v = store.pack(tmp_path / "m.safetensors", message="all dtypes")
    ref = load_file(tmp_path / "m.safetensors")
    with store.open(v.id) as r:
        assert sorted(r.keys()) == sorted(ref)
        assert r.metadata() == {"format": "np", "step": "7"}
        for k in ref:
            equal(r.get_tensor(k), ref[k])
    loaded = store.load()
    assert sorted(loaded) == sorted(ref)
    for k in ref:
        equal(loaded[k], ref[k])
        assert loaded[k].flags.writeable


def test_fp8_and_every_dtype_round_trip_through_save(store, rng):
    t = tensors_of_every_dtype(rng, DTYPES + FP8)
    v = store.save(t, metadata={"a": "b"})
    loaded = store.load(v.id)
    assert sorted(loaded) == sorted(t)
    for k in t:
        equal(loaded[k], t[k])
    # The staged file is a safetensors file: what safetensors reads of it
    # (it has no FP8) is the same, and the header names the FP8 dtypes.
    out = store.path + "-out.safetensors"
    store.restore(v.id, out)
    no_fp8 = {k: a for k, a in t.items() if "float8" not in k}
    store.restore(store.save(no_fp8).id, out + "2")
    ref = load_file(out + "2")
    assert sorted(ref) == sorted(no_fp8)
    for k in ref:
        equal(ref[k], t[k])
    with open(out, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    assert header["__metadata__"] == {"a": "b"}
    assert {header[k]["dtype"] for k in t if "float8" in k} == {"F8_E4M3", "F8_E5M2"}


def test_restore_is_the_same_file(store, tmp_path, rng):
    t = tensors_of_every_dtype(rng)
    save_file(t, tmp_path / "m.safetensors")
    store.pack(tmp_path / "m.safetensors", tag="v1")
    rep = store.restore("v1", tmp_path / "out.safetensors")
    assert rep.bytes == (tmp_path / "m.safetensors").stat().st_size
    assert (tmp_path / "out.safetensors").read_bytes() == (tmp_path / "m.safetensors").read_bytes()


def test_sharded_directory(store, tmp_path, rng):
    d = tmp_path / "ckpt"
    d.mkdir()
    a = {f"layer.{i}.w": rng.standard_normal((64, 64)).astype(ml_dtypes.bfloat16) for i in range(4)}
    b = {f"layer.{i}.w": rng.standard_normal((64, 64)).astype(ml_dtypes.bfloat16) for i in range(4, 8)}
    save_file(a, d / "model-00001-of-00002.safetensors", metadata={"format": "pt"})
    save_file(b, d / "model-00002-of-00002.safetensors", metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps({"hidden": 64}))
    store.pack(d, message="sharded")
    r = store.open()
    assert sorted(r.files()) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert sorted(r.keys()) == sorted(list(a) + list(b))
    assert r.metadata() == {"format": "pt"}
    for k, v in {**a, **b}.items():
        equal(r.get_tensor(k), v)
    part = store.load(tensors=["layer.1.w", "layer.6.w"])
    assert sorted(part) == ["layer.1.w", "layer.6.w"]
    equal(part["layer.6.w"], b["layer.6.w"])
    store.restore("HEAD", tmp_path / "out")
    assert (tmp_path / "out" / "config.json").read_text() == (d / "config.json").read_text()


def test_get_slice_reads_rows(store, tmp_path, rng):
    w = rng.standard_normal((1000, 300)).astype(np.float32)
    save_file({"w": w, "s": np.array(1.0, np.float32)}, tmp_path / "m.safetensors")
    store.pack(tmp_path / "m.safetensors")
    s = store.open().get_slice("w")
    assert s.get_shape() == [1000, 300] and s.get_dtype() == "F32"
    for key in [slice(0, 1), slice(10, 900), slice(999, None), slice(None, None, 7), slice(800, 100, -3),
                slice(5, 5), 0, 999, -1, (slice(3, 9), slice(2, 4)), (7, slice(None, 5)), Ellipsis]:
        np.testing.assert_array_equal(s[key], w[key])
    with pytest.raises(IndexError):
        s[1000]
    np.testing.assert_array_equal(store.open().get_slice("s")[...], np.array(1.0, np.float32))


def test_save_packs_a_dict_without_a_file(store, rng):
    t = {"emb": rng.standard_normal((50, 8)).astype(ml_dtypes.bfloat16), "ids": np.arange(10, dtype=np.int64)}
    v = store.save(t, metadata={"format": "np"}, message="from memory", tag="mem")
    assert store.show("mem").manifest.message == "from memory"
    r = store.open(v.id)
    assert r.metadata() == {"format": "np"}
    for k in t:
        equal(r.get_tensor(k), t[k])
    with pytest.raises(tdelta.InvalidInput):
        store.save({"bad": np.array(["x"])})


def test_reports_have_the_cli_json_fields(store, tmp_path, rng):
    save_file({"w": rng.standard_normal((100, 100)).astype(np.float32)}, tmp_path / "a.safetensors")
    w2 = load_file(tmp_path / "a.safetensors")["w"]
    w2[:10] += 1
    save_file({"w": w2}, tmp_path / "b.safetensors")
    a = store.pack(tmp_path / "a.safetensors", message="a", meta={"run": 1}, metrics={"loss": 2.0})
    b = store.pack(tmp_path / "b.safetensors", message="b", metrics={"loss": np.float64(1.0)}, tag="best")
    cli = run_cli("--store", store.path, "log", "--json")
    assert cli.returncode == 0, cli.stderr
    log = store.log()
    assert [e.id for e in log] == [b.id, a.id]
    assert [sorted(e) for e in log] == [sorted(e) for e in json.loads(cli.stdout)]
    assert log[1].meta == {"run": "1"} and log[0].metrics == {"loss": 1.0}
    assert "best" in log[0].refs and log[0].refs == json.loads(cli.stdout)[0]["refs"]
    assert store.log(where={"run": "1"})[0].id == a.id
    assert store.show("best").manifest.parent == a.id
    d = store.diff(a.id, "best")
    assert d.tensors[0]["name"] == "w" and d.tensors[0]["status"] == "changed"
    assert store.verify().ok and store.verify([a.id]).ok
    st = store.stats()
    assert len(st.versions) == 2 and st.raw_bytes > 0
    assert store.tag("old", a.id).id == a.id
    assert {t.name for t in store.tags()} == {"best", "old"}
    assert store.tag("old", delete=True).deleted
    rb = store.rollback("HEAD", to=a.id)
    assert (rb.old, rb.new) == (b.id, a.id) and store.resolve("HEAD") == a.id


def test_reads_from_many_threads(store, tmp_path, rng):
    t = {f"w{i}": rng.standard_normal((200, 100)).astype(np.float32) for i in range(8)}
    save_file(t, tmp_path / "m.safetensors")
    store.pack(tmp_path / "m.safetensors")
    r = store.open()
    errors = []

    def work(i):
        try:
            for j in range(20):
                k = f"w{(i + j) % 8}"
                np.testing.assert_array_equal(r.get_tensor(k), t[k])
                np.testing.assert_array_equal(r.get_slice(k)[j : j + 5], t[k][j : j + 5])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_progress_callback_sees_the_bytes(store, tmp_path, rng):
    big = rng.standard_normal((3000, 1000)).astype(np.float32)
    save_file({"w": big}, tmp_path / "m.safetensors")
    seen = []
    store.pack(tmp_path / "m.safetensors", progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert seen and seen[-1][1] == seen[-1][2] > 0
    seen.clear()
    store.load(progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert seen[-1] == ("read", big.nbytes, big.nbytes)


def test_a_failing_callback_stops_a_read(store, tmp_path, rng):
    save_file({"w": rng.standard_normal((4000, 1000)).astype(np.float32)}, tmp_path / "m.safetensors")
    store.pack(tmp_path / "m.safetensors")

    class Stop(Exception):
        pass

    def cb(phase, done, total):
        raise Stop()

    # Raised at the callback's first call (after the read, if it was quicker).
    with pytest.raises(Stop):
        store.load(progress=cb)


def test_torch(store, tmp_path, rng):
    torch = pytest.importorskip("torch", reason="torch is not installed: torch tests skipped")
    t = {"w": torch.randn(16, 8, dtype=torch.bfloat16), "i": torch.arange(5)}
    v = store.save(t)
    r = store.open(v.id)
    for k in t:
        got = r.get_tensor(k, framework="pt")
        assert got.dtype == t[k].dtype and torch.equal(got, t[k])


def test_reads_go_on_while_another_thread_packs(store, tmp_path, rng):
    # A pack holds the store's write lock and needs the GIL to report
    # progress; a reader waiting for the lock must not hold the GIL.
    small = {"w": rng.standard_normal((100, 100)).astype(np.float32)}
    save_file(small, tmp_path / "a.safetensors")
    first = store.pack(tmp_path / "a.safetensors")
    save_file({f"w{i}": rng.standard_normal((1000, 1000)).astype(np.float32) for i in range(8)},
              tmp_path / "b.safetensors")
    calls = []
    th = threading.Thread(
        target=lambda: store.pack(tmp_path / "b.safetensors", progress=lambda *a: calls.append(a)))
    th.start()
    reads = 0
    while th.is_alive() or reads == 0:
        np.testing.assert_array_equal(store.load(first.id)["w"], small["w"])
        reads += 1
    th.join(timeout=300)
    assert not th.is_alive()
    assert len(store.log()) == 2 and calls


def test_a_handle_reads_versions_another_handle_packed_since(store, tmp_path, rng):
    # Two handles as two processes would have them: the reader's pack
    # index predates the writer's new pack.
    save_file({"w": rng.standard_normal((300, 300)).astype(np.float32)}, tmp_path / "a.safetensors")
    store.pack(tmp_path / "a.safetensors")
    reader = tdelta.Store(store.path)
    new = {"w": rng.standard_normal((300, 300)).astype(np.float32)}
    save_file(new, tmp_path / "b.safetensors")
    v = tdelta.Store(store.path).pack(tmp_path / "b.safetensors", base="none")
    np.testing.assert_array_equal(reader.open(v.id).get_tensor("w"), new["w"])
    np.testing.assert_array_equal(reader.load()["w"], new["w"])
    reader.restore(v.id, tmp_path / "out.safetensors")
    assert (tmp_path / "out.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_opening_a_version_again_reads_only_its_ref(store, rng):
    # Its manifest is kept from the first open (a version never changes):
    # with the file moved away the version still opens, until refresh().
    w = rng.standard_normal((64, 64), dtype=np.float32)
    store.save({"w": w})
    assert (store.open("HEAD").get_tensor("w") == w).all()
    path = os.path.join(store.path, "versions", store.resolve("HEAD") + ".tdm")
    os.rename(path, path + ".away")
    try:
        assert (store.open("HEAD").get_tensor("w") == w).all()
        store.refresh()
        with pytest.raises(tdelta.TdeltaError):
            store.open("HEAD")
    finally:
        os.rename(path + ".away", path)
    assert (store.open("HEAD").get_tensor("w") == w).all()


def test_lossy_pack_options(store, tmp_path, rng):
    w = rng.standard_normal((512, 512)).astype(np.float32)
    save_file({"w": w}, tmp_path / "a.safetensors")
    store.pack(tmp_path / "a.safetensors")
    save_file({"w": w + rng.standard_normal(w.shape).astype(np.float32) * 1e-3}, tmp_path / "b.safetensors")
    with pytest.raises(tdelta.InvalidInput, match="need lossy"):
        store.pack(tmp_path / "b.safetensors", max_error=0.01)
    with pytest.raises(tdelta.InvalidInput):
        store.pack(tmp_path / "b.safetensors", lossy="int3")
    v = store.pack(tmp_path / "b.safetensors", lossy="int8", max_error=0.01)
    assert v.lossy and store.log()[0].lossy
    assert store.restore(v.id, tmp_path / "out.safetensors").lossy
