"""A `brain STEP` process imports what its step needs, not what every command might (issue 17's fixed costs)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Imported only by the commands that use them; each costs a job process 0.2-0.4 s on this machine.
NOT_AT_START = ("sqlglot", "ray", "ray.data", "pyspark")


def test_a_job_command_starts_without_sqlglot_or_the_engines():
    code = ("import json, sys; import jobs.cli; from jobs.registry import load_jobs; "
            "load_jobs(['register-embeddings', 'neighbors', 'uniqueness', 'label-quality']); "
            f"print(json.dumps([m for m in {NOT_AT_START!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == []

