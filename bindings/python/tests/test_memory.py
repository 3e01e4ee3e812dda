"""load() decodes each tensor once, into the buffer of the array it returns:
the process grows by the arrays' bytes and little more (no second copy)."""

import numpy as np
from safetensors.numpy import save_file

import tdelta
from peak_rss import run_child

CHILD = """
import json, sys, tdelta
s = tdelta.Store(sys.argv[1])
base = hwm()
d = s.load()
print(json.dumps({"growth": hwm() - base, "arrays": sum(a.nbytes for a in d.values())}))
"""


def test_load_peak_memory_is_the_arrays(tmp_path):
    store = tdelta.Store.init(tmp_path / "s")
    # 256 MiB in 64 tensors, cheap to make and to pack.
    t = {f"w{i}": np.arange(1 << 20, dtype=np.float32) * i for i in range(64)}
    save_file(t, tmp_path / "m.safetensors")
    store.pack(tmp_path / "m.safetensors")
    del t
    m = run_child(CHILD, store.path)
    assert m["arrays"] == 256 << 20
    # A second copy of the data would add 256 MiB.
    assert m["growth"] - m["arrays"] < 64 << 20, m
