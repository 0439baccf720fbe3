"""The lake browser: a read-only web app over a lake (``brain app``) and its static report (``brain report``).

:mod:`brain.app.queries` computes every view as JSON-ready data; :mod:`brain.app.server`
serves it with the front end in ``static/``; :mod:`brain.app.report` writes the same
front end with the data and thumbnails embedded.
"""

from __future__ import annotations


def serve(lake_uri: str, *, host: str = "127.0.0.1", port: int = 8765, cache_dir: str | None = None) -> None:
    from brain.app.server import serve as run_server

    run_server(lake_uri, host=host, port=port, cache_dir=cache_dir)


def write_report(lake_uri: str, out: str, **options) -> str:
    from brain.app.report import write_report as write

    return write(lake_uri, out, **options)
