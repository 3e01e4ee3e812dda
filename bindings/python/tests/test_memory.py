"""load() decodes each tensor once, into the buffer of the array it returns:
the process grows by the arrays' bytes and little more (no second copy)."""

import json
import subprocess
import sys

import numpy as np
from safetensors.numpy import save_file

import tdelta

CHILD = """
import json, sys, tdelta
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
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
    out = subprocess.run([sys.executable, "-c", CHILD, store.path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    assert m["arrays"] == 256 << 20
    # A second copy of the data would add 256 MiB.
    assert m["growth"] - m["arrays"] < 64 << 20, m
