"""The OpenMP spin limit that keeps torch's threads from stalling beside a busy process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.openmp import SPIN_COUNT, limit_openmp_spinning

ROOT = Path(__file__).resolve().parents[1]


def test_the_spin_limit_is_set_unless_the_user_chose_a_policy():
    env = {}
    assert limit_openmp_spinning(env) and env == {"GOMP_SPINCOUNT": SPIN_COUNT}
    for user in ({"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "ACTIVE"}):
        env = dict(user)
        assert not limit_openmp_spinning(env) and env == user


def test_main_sets_it_before_torch_loads():
    probe = "import sys, main; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", "import os; " + probe], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert out == [SPIN_COUNT, "False"]
    env["GOMP_SPINCOUNT"] = "123"
    out = subprocess.run([sys.executable, "-c", "import os; " + probe], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert out == ["123", "False"]
