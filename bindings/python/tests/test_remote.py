"""tdelta.Store("s3://bucket/prefix"): a store pushed to S3 read in place,
against the S3 server scripts/test starts (TDELTA_TEST_S3). Without a
server these tests skip, saying so; TDELTA_REQUIRE_S3=1 makes that a
failure."""

import http.client
import os
import uuid

import numpy as np
import pytest
from safetensors.numpy import save_file

import tdelta
from conftest import run_cli

KEY_ID = "AKIATDELTATESTKEY01"
SECRET = "tdelta-test-secret-9f8e7d6c5b4a"


@pytest.fixture
def endpoint(monkeypatch):
    e = os.environ.get("TDELTA_TEST_S3")
    if not e:
        if os.environ.get("TDELTA_REQUIRE_S3"):
            pytest.fail("TDELTA_REQUIRE_S3 is set but TDELTA_TEST_S3 is not: run scripts/test")
        pytest.skip("TDELTA_TEST_S3 is not set (scripts/test starts an S3 server)")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", e)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return e


def bucket(endpoint):
    """A new bucket on the server; the URL of a prefix in it."""
    name = f"py-{uuid.uuid4().hex[:12]}"
    host = endpoint.split("://", 1)[1].rstrip("/")
    c = http.client.HTTPConnection(host, timeout=10)
    c.request("PUT", f"/{name}", body=b"")
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read())
    return f"s3://{name}/models"


@pytest.fixture
def pushed(endpoint, tmp_path, rng):
    """A local store of two versions (the second tagged `best`), pushed."""
    local = tdelta.Store.init(tmp_path / "local", block_size=4096)
    w = rng.standard_normal((200, 100)).astype(np.float32)
    for step in (1, 2):
        save_file({"w": w * step, "b": np.arange(7, dtype=np.int64)}, tmp_path / "m.safetensors",
                  metadata={"step": str(step)})
        local.pack(tmp_path / "m.safetensors", message=f"step {step}", tag="best" if step == 2 else None)
    url = bucket(endpoint)
    for args in (("remote", "add", "origin", url, "--default"), ("push",)):
        out = run_cli("--store", local.path, *args)
        assert out.returncode == 0, out.stderr
    return local, url, w


def test_an_s3_store_reads_like_a_local_one(pushed, tmp_path):
    local, url, w = pushed
    s = tdelta.Store(url)
    assert s.path == url
    assert s.resolve("best") == local.resolve("best")
    assert [v.id for v in s.log()] == [v.id for v in local.log()]
    assert s.show("best").manifest.message == "step 2"
    assert sorted(t.name for t in s.tags()) == sorted(t.name for t in local.tags())
    with s.open("best") as r:
        assert r.metadata() == {"step": "2"}
        np.testing.assert_array_equal(r.get_tensor("w"), w * 2)
        np.testing.assert_array_equal(r.get_slice("w")[10:20], (w * 2)[10:20])
    d = s.load("HEAD~1")
    np.testing.assert_array_equal(d["w"], w)
    s.restore("best", tmp_path / "out.safetensors")
    local.restore("best", tmp_path / "ref.safetensors")
    assert (tmp_path / "out.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert s.verify().ok


def test_an_s3_store_refuses_writes(pushed, tmp_path):
    _, url, _ = pushed
    s = tdelta.Store(url)
    save_file({"w": np.zeros(4, np.float32)}, tmp_path / "n.safetensors")
    with pytest.raises(tdelta.ReadOnly, match="opened read-only"):
        s.pack(tmp_path / "n.safetensors")
    with pytest.raises(tdelta.ReadOnly):
        s.save({"w": np.zeros(4, np.float32)})
    with pytest.raises(tdelta.ReadOnly):
        s.tag("x")
    with pytest.raises(tdelta.ReadOnly):
        s.tag("best", delete=True)
    with pytest.raises(tdelta.ReadOnly):
        s.rollback()
    assert issubclass(tdelta.ReadOnly, tdelta.TdeltaError)
    assert [v.message for v in s.log()] == ["step 2", "step 1"]


def test_urls_that_name_no_store(endpoint):
    with pytest.raises(tdelta.NotFound):
        tdelta.Store(bucket(endpoint) + "/nothing-here")
    with pytest.raises(tdelta.InvalidInput, match="valid values are: s3, file"):
        tdelta.Store("gs://bucket/prefix")
    with pytest.raises(tdelta.InvalidInput, match="not a url"):
        tdelta.Store.init("s3://bucket/prefix")


def test_file_urls_open_local_stores(tmp_path):
    s = tdelta.Store.init(tmp_path / "s")
    assert tdelta.Store(f"file://{s.path}").path == s.path
