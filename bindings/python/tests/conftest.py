import os
import shutil
import subprocess

import numpy as np
import pytest

import tdelta


@pytest.fixture
def store(tmp_path):
    return tdelta.Store.init(tmp_path / "store")


@pytest.fixture
def rng():
    return np.random.default_rng(16)


def tdelta_bin():
    """The CLI binary (scripts/test-python sets TDELTA_BIN), or None."""
    b = os.environ.get("TDELTA_BIN") or shutil.which("tdelta")
    return b if b and os.path.exists(b) else None


def run_cli(*args):
    b = tdelta_bin()
    if b is None:
        pytest.skip("the tdelta CLI is not built (set TDELTA_BIN)")
    return subprocess.run([b, *args], capture_output=True, text=True)
