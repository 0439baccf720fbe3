"""Fixtures of the lake browser's tests: the demo-like lake (built once) and the app serving it."""

from __future__ import annotations

import socket
import threading
import time

import pytest


@pytest.fixture(scope="session")
def app_lake(tmp_path_factory, ray_session, spark):
    from tests.integration.app_lake import build

    return build(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="session")
def app_url(app_lake, tmp_path_factory):
    """The app over the demo-like lake, served by uvicorn on a free loopback port for the session."""
    import uvicorn

    from brain.app.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(app_lake.lake, cache_dir=tmp_path_factory.mktemp("thumbs"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not start in 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
