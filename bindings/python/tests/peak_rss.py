"""Peak memory of a fresh interpreter, for the tests that bound it: the
child script gets `hwm()` defined and prints its results as JSON."""

import inspect
import json
import subprocess
import sys


def hwm() -> int:
    """This process's peak resident set, in bytes. VmHWM, not ru_maxrss:
    Linux carries ru_maxrss over from the forking parent across exec,
    VmHWM belongs to the new process alone."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(code: str, *args: str) -> dict:
    """Runs `code` (with `hwm` defined) in a new interpreter with `args`
    as its argv; returns the JSON it printed."""
    script = inspect.getsource(hwm) + code
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
