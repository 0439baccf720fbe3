import json
import os
import subprocess
import sys
import time

import pytest

from brain.scan import ScanLock, ScanLockedError


def test_a_second_scan_is_refused_with_the_owner(lake):
    with ScanLock(lake, "pets", heartbeat_s=0.05) as first:
        time.sleep(0.2)
        beat = first.holder()["heartbeat"]
        assert time.time() - beat < 0.2  # the heartbeat thread refreshes it
        with pytest.raises(ScanLockedError, match=f"pid {os.getpid()}"):
            ScanLock(lake, "pets").acquire()
        ScanLock(lake, "other").acquire().release()  # another dataset is free
    assert first.holder() is None
    ScanLock(lake, "pets").acquire().release()


def test_a_lock_left_by_a_dead_process_or_without_heartbeat_is_taken_over(lake):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = ScanLock(lake, "pets")
    lock.path.parent.mkdir(parents=True)
    lock.path.write_text(json.dumps(dict(host=lock.owner["host"], pid=int(dead.stdout), token="x",
                                         started_at=time.time(), heartbeat=time.time())))
    lock.acquire()
    assert lock.holder()["pid"] == os.getpid()
    lock.release()
    lock.path.write_text(json.dumps(dict(host="elsewhere", pid=1, token="y", started_at=0, heartbeat=time.time() - 5)))
    with pytest.raises(ScanLockedError, match="host elsewhere"):
        ScanLock(lake, "pets", stale_after_s=60).acquire()
    taker = ScanLock(lake, "pets", stale_after_s=1).acquire()
    assert taker.holder()["token"] == taker.owner["token"]
    taker.release()
