"""``brain report --out DIR``: the lake browser's views as static files, for sharing where no server may run.

DIR gets the app's own front end (``index.html``, ``static/app.js``, ``app.css``,
plotly.js) and ``report-data.js``, which holds the JSON of each view (the overview,
the first page of every duplicates, leaks and label-mistakes run, every visualization
run's points, the run catalog, the details of the samples those views show) under the
same paths the app fetches, every sample's row with its scores (the grid sorts and
pages those in the browser), and each shown sample's thumbnail as a PNG data URI.
Opening ``index.html`` from disk needs nothing else; there is no search and no WHERE
filter without the server.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator

from brain import progress
from brain.app import queries
from brain.app.server import STATIC, plotly_js
from brain.app.thumbnails import ThumbnailCache, placeholder
from brain.lake import Lake

log = logging.getLogger(__name__)

REPORT_THUMB_SIZE = 128
_UNRESERVED = "!~*'()"  # what JavaScript's encodeURIComponent leaves as is, besides letters, digits and -_.


def _path(base: str, **params: Any) -> str:
    """The key the front end's ``apiPath`` builds: parameters in order, empty ones left out."""
    from urllib.parse import quote

    query = "&".join(f"{quote(k, safe=_UNRESERVED)}={quote(str(v), safe=_UNRESERVED)}"
                     for k, v in params.items() if v not in (None, ""))
    return f"{base}?{query}" if query else base


def _sample_ids(value: Any) -> Iterator[str]:
    """Every sample id a view's JSON names (``sample_id`` / ``kept_sample_id`` values, map points)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("sample_id", "kept_sample_id") and isinstance(v, str):
                yield v
            elif k == "sample_id" and isinstance(v, list):
                yield from (i for i in v if isinstance(i, str))
            else:
                yield from _sample_ids(v)
    elif isinstance(value, list):
        for item in value:
            yield from _sample_ids(item)


def write_report(lake_uri: str, out: str | Path, *, max_samples: int = 2000, detail_samples: int = 200,
                 cache_dir: str | Path | None = None) -> Path:
    """Write the report under ``out``; returns the path of its ``index.html``.

    ``max_samples``: samples (by id) whose rows and thumbnails the grid holds; ``detail_samples``: samples
    (those the group, mistake and top-score views show first) whose page has predictions and neighbours.
    """
    lake = Lake(lake_uri)
    out = Path(out)
    views: dict[str, Any] = {"/api/overview": queries.overview(lake)}
    current = queries.current_runs(lake)
    for method, route, build in ((("duplicates_near", "duplicates_exact"), "/api/duplicates", queries.duplicate_groups),
                                 (("leaks",), "/api/leaks", queries.leak_groups),
                                 (("mistakenness", "detection_mistakenness"), "/api/mistakes", queries.mistakes)):
        keys = [r["brain_key"] for r in current if r["method"] in method]
        for key in keys:
            views[_path(route, key=key, page=0)] = build(lake, key=key)
        if keys:
            views[_path(route, page=0)] = views[_path(route, key=keys[-1], page=0)]
    vis_keys = [r["brain_key"] for r in current if r["method"] == "visualization"]
    for key in vis_keys:
        views[_path("/api/map", key=key)] = queries.map_points(lake, key=key)
    if vis_keys:
        views["/api/map"] = views[_path("/api/map", key=vis_keys[-1])]
    for run in views["/api/overview"]["runs"]:
        views[f"/api/run/{run['run_id']}"] = queries.run_info(lake, run["run_id"])

    rows: list[dict[str, Any]] = []
    while len(rows) < max_samples:
        page = queries.samples(lake, page=len(rows) // queries.MAX_PER_PAGE, per_page=queries.MAX_PER_PAGE)
        rows += page["items"]
        if len(page["items"]) < queries.MAX_PER_PAGE:
            break
    rows = rows[:max_samples]
    score_names = [s.name for s in queries.scores(lake)]
    shown = list(dict.fromkeys(_sample_ids([v for k, v in views.items() if not k.startswith("/api/map")])))
    for name in score_names:
        shown += [r["sample_id"] for r in queries.samples(lake, sort=name, per_page=48)["items"]]
    detail = list(dict.fromkeys(shown))[:detail_samples]
    for sample_id in progress.iterate(detail, desc="report: sample pages", unit="samples"):
        views[f"/api/sample/{sample_id}"] = queries.sample(lake, sample_id)

    cache = ThumbnailCache(lake.uri, cache_dir)
    wanted = list(dict.fromkeys([r["sample_id"] for r in rows] + list(_sample_ids(views))))
    uris = {r["sample_id"]: (r["uri"], None) for r in rows}
    thumbs = {}
    for sample_id in progress.iterate(wanted, desc="report: thumbnails", unit="images"):
        try:
            uri, content_hash = uris.get(sample_id) or queries.sample_uri(lake, sample_id)
        except queries.NotFound:
            continue
        data, _ = cache.png(uri, content_hash, REPORT_THUMB_SIZE)
        thumbs[sample_id] = "data:image/png;base64," + base64.b64encode(data).decode()

    report = dict(lake=lake.uri, created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  views=views, samples=[{k: v for k, v in r.items() if k != "uri"} for r in rows],
                  scores=score_names, thumbs=thumbs,
                  placeholder="data:image/png;base64," + base64.b64encode(placeholder(REPORT_THUMB_SIZE)).decode())
    (out / "static").mkdir(parents=True, exist_ok=True)
    for name in ("app.js", "app.css"):
        shutil.copyfile(STATIC / name, out / "static" / name)
    shutil.copyfile(plotly_js(), out / "static" / "plotly.min.js")
    (out / "report-data.js").write_text("window.LAKEBRAIN_REPORT = " + json.dumps(report, default=str) + ";\n")
    html = (STATIC / "index.html").read_text().replace(
        "<!-- report-data -->", '<script src="report-data.js"></script>')
    (out / "index.html").write_text(html)
    log.info("report: %d samples, %d sample pages, %d thumbnails under %s", len(rows), len(detail), len(thumbs), out)
    return out / "index.html"
