"""Side-by-side timings of the Python package against unpack + safetensors.

    python bindings/python/bench/bench.py --tdelta target/release/tdelta --dir /tmp/tdbench

Generates (once, kept in --dir) two ~1 GB BF16 checkpoints (16 tensors of
50 MB and 64 of 3 MB; the second is the first plus a small update, as after
some fine-tuning steps) and packs them with the CLI, then measures, each --repeat times (medians printed):

1. `store.load(HEAD)` of the whole version, against `tdelta unpack` to
   disk followed by `safetensors.numpy.load_file` of every file;
2. `store.open(HEAD).get_tensor(T)` of the tensor T closest to 50 MB,
   against `safe_open(restored file).get_tensor(T)`, the page cache of the
   store's files (resp. of the restored file) dropped before each run with
   posix_fadvise(DONTNEED) (no root needed, nothing else on the machine is
   evicted);
3. the peak RSS of a process doing `store.load(HEAD)`, against the bytes of
   the arrays it returns.

`--only get_tensor` measures 2. alone, with each side's warm-cache time
(a cold `get_tensor` reads around the page cache, so the store's files are
read into it first), the process's CPU time of the warm decode and a plain
cold read of the restored file (what bounds each side: decoding vs the
disk); each side goes first in every other round.

Build the package in release mode for meaningful numbers
(`pip install ./bindings/python` or `maturin develop --release`).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

import tdelta


def drop_cache(path):
    """Evicts the clean pages of every file under `path`."""
    paths = [path] if os.path.isfile(path) else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_cache(path):
    """Reads every file under `path` into the page cache."""
    paths = [path] if os.path.isfile(path) else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    for p in paths:
        with open(p, "rb", buffering=0) as h:
            while h.read(8 << 20):
                pass


def st_files(out):
    if os.path.isfile(out):
        return [out]
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.endswith(".safetensors"))


def timed(f):
    t0 = time.perf_counter()
    r = f()
    return time.perf_counter() - t0, r


def make_series(d, store_path, cli):
    import ml_dtypes
    from safetensors.numpy import save_file

    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(16)
    shapes = {f"layers.{i}.mlp.weight": (5000, 5000) for i in range(16)}
    shapes.update({f"layers.{i}.attn.weight": (1024, 1536) for i in range(64)})
    w = {k: (rng.standard_normal(s, dtype=np.float32) * 0.02) for k, s in shapes.items()}
    subprocess.run([cli, "--store", store_path, "init", "-q"], check=True)
    for step in (1, 2):
        path = os.path.join(d, f"step{step}.safetensors")
        save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in w.items()}, path, metadata={"format": "np"})
        subprocess.run([cli, "--store", store_path, "pack", path, "-q", "-m", f"step {step}"], check=True)
        os.remove(path)
        for v in w.values():
            v += rng.standard_normal(v.shape, dtype=np.float32) * 2e-4


def rss_child(store_path):
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking
    # parent across exec, VmHWM belongs to the new process alone.
    code = f"""
import json, tdelta
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
s = tdelta.Store({store_path!r})
base = hwm()
d = s.load("HEAD")
print(json.dumps({{"base_kib": base, "peak_kib": hwm(), "array_bytes": sum(a.nbytes for a in d.values())}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tdelta", default="target/release/tdelta", help="the CLI binary (release build)")
    ap.add_argument("--dir", default="/tmp/tdelta-pybench")
    ap.add_argument("--size", default="1G")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", choices=["get_tensor"], help="measure only get_tensor against safe_open")
    a = ap.parse_args()

    store_path = os.path.join(a.dir, "store")
    if not os.path.exists(store_path):
        make_series(a.dir, store_path, a.tdelta)
    store = tdelta.Store(store_path)
    r = store.open("HEAD")
    sizes = {k: int(np.prod(r.get_shape(k))) * 2 for k in r.keys()}
    total = sum(sizes.values())
    name = min(sizes, key=lambda k: abs(sizes[k] - 50e6))
    print(f"version {r.id[:8]}: {len(sizes)} tensors, {total / 1e9:.2f} GB; "
          f"tensor {name}: {sizes[name] / 1e6:.1f} MB, dtype {r.get_dtype(name)}")

    out = os.path.join(a.dir, "restored")
    if a.only == "get_tensor":
        return get_tensor_only(a, store, store_path, out, name)
    res = {"load": [], "unpack+load_file": [], "get_tensor": [], "safe_open": []}
    for _ in range(a.repeat):
        drop_cache(store_path)
        t, d = timed(lambda: store.load("HEAD"))
        res["load"].append(t)
        del d
        if os.path.isdir(out):
            shutil.rmtree(out)
        elif os.path.exists(out):
            os.remove(out)
        drop_cache(store_path)

        def unpack_load():
            subprocess.run([a.tdelta, "--store", store_path, "unpack", "HEAD", "-o", out, "-q"], check=True)
            return {k: v for f in st_files(out) for k, v in load_file(f).items()}

        t, d = timed(unpack_load)
        res["unpack+load_file"].append(t)
        del d

        drop_cache(store_path)
        t, x = timed(lambda: store.open("HEAD").get_tensor(name))
        res["get_tensor"].append(t)
        f = next(p for p in st_files(out) if name in safe_open(p, "np").keys())
        drop_cache(f)

        def via_safe_open():
            with safe_open(f, "np") as h:
                return h.get_tensor(name)

        t, y = timed(via_safe_open)
        res["safe_open"].append(t)
        assert x.view(np.uint16).tobytes() == y.view(np.uint16).tobytes()

    med = {k: statistics.median(v) for k, v in res.items()}
    for k, v in med.items():
        print(f"{k:18} median {v:.3f} s  (runs: {', '.join(f'{x:.3f}' for x in res[k])})")
    print(f"load / (unpack+load_file) = {med['load'] / med['unpack+load_file']:.2f} (target <= 1)")
    print(f"get_tensor / safe_open    = {med['get_tensor'] / med['safe_open']:.2f} (target <= 1.2)")
    m = rss_child(store_path)
    extra = (m["peak_kib"] - m["base_kib"]) * 1024 - m["array_bytes"]
    print(f"load() peak RSS {m['peak_kib'] / 1024:.0f} MiB (interpreter before load {m['base_kib'] / 1024:.0f} MiB), "
          f"arrays {m['array_bytes'] / 2**20:.0f} MiB: growth - arrays = {extra / 2**20:.0f} MiB (target <= 256)")


def cpu_seconds():
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def get_tensor_only(a, store, store_path, out, name):
    if not os.path.exists(out):
        subprocess.run([a.tdelta, "--store", store_path, "unpack", "HEAD", "-o", out, "-q"], check=True)
    f = next(p for p in st_files(out) if name in safe_open(p, "np").keys())

    def via_safe_open():
        with safe_open(f, "np") as h:
            return h.get_tensor(name)

    def read_file():
        with open(f, "rb", buffering=0) as h:
            while h.read(8 << 20):
                pass

    res = {k: [] for k in ("get_tensor", "get_tensor warm", "safe_open", "safe_open warm", "read file cold")}
    cpu = []
    got = {}

    def tdelta_side():
        drop_cache(store_path)
        t, got["x"] = timed(lambda: store.open("HEAD").get_tensor(name))
        res["get_tensor"].append(t)
        # A cold read goes around the page cache and leaves it cold: warm
        # means the store's files read into it first.
        warm_cache(store_path)
        c0 = cpu_seconds()
        t, got["x"] = timed(lambda: store.open("HEAD").get_tensor(name))
        cpu.append(cpu_seconds() - c0)
        res["get_tensor warm"].append(t)

    def safetensors_side():
        drop_cache(f)
        t, got["y"] = timed(via_safe_open)
        res["safe_open"].append(t)
        t, got["y"] = timed(via_safe_open)
        res["safe_open warm"].append(t)

    for i in range(a.repeat):
        drop_cache(f)
        t, _ = timed(read_file)
        res["read file cold"].append(t)
        # Each side goes first every other time: what ran just before (a
        # 1 GB read, the other side) weighs on both alike.
        for side in (tdelta_side, safetensors_side) if i % 2 == 0 else (safetensors_side, tdelta_side):
            side()
        assert got["x"].view(np.uint16).tobytes() == got["y"].view(np.uint16).tobytes()
    x = got["x"]
    med = {k: statistics.median(v) for k, v in res.items()}
    for k, v in med.items():
        print(f"{k:18} median {v:.3f} s  (runs: {', '.join(f'{x:.3f}' for x in res[k])})")
    mb = x.nbytes / 1e6
    c = statistics.median(cpu)
    print(f"decode CPU time {c:.3f} s for {mb:.0f} MB: {mb / c:.0f} MB/s per core; "
          f"disk {os.path.getsize(f) / 1e6 / med['read file cold']:.0f} MB/s")
    print(f"get_tensor / safe_open    = {med['get_tensor'] / med['safe_open']:.2f} cold, "
          f"{med['get_tensor warm'] / med['safe_open warm']:.2f} warm (target <= 1.2 cold); "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
