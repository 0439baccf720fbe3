"""The engines state file (`brain engines up` records, jobs read): no engine is started here."""

from __future__ import annotations

import json
import os
import subprocess

from jobs import engines
from jobs.cli import main


def test_jobs_join_only_recorded_engines_whose_process_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(engines.STATE_DIR_ENV, str(tmp_path))
    assert engines.state_file() == tmp_path / "engines.json"
    assert engines.recorded_engines() == {}
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "30"], start_new_session=True)  # its own group, as `up` starts Ray
    try:
        engines.state_file().write_text(json.dumps({
            "ray": {"address": "127.0.0.1:1", "pgid": alive.pid, "temp_dir": str(tmp_path / "ray"),
                    "token_file": "unused"},
            "spark": {"remote": "sc://127.0.0.1:1", "pid": gone.pid, "folder": str(tmp_path)}}))
        assert set(engines.recorded_engines()) == {"ray"}  # a dead Connect server is not joined
        assert main(["engines", "status"]) == 1  # nothing answers on port 1
        out = capsys.readouterr().out
        assert "ray: 127.0.0.1:1 (pid %d): running, not answering" % alive.pid in out
        assert "spark: sc://127.0.0.1:1" in out and ": gone" in out
    finally:
        alive.kill()
        alive.wait()


def test_down_with_nothing_recorded_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(engines.STATE_DIR_ENV, str(tmp_path))
    assert main(["engines", "down"]) == 0
    assert "no engines recorded" in capsys.readouterr().out
    assert not os.path.exists(engines.state_file())
