"""The lake browser's web server: Starlette routes over :mod:`brain.app.queries`, read-only.

    /                      the single-page front end (static/index.html)
    /static/...            its JS and CSS; /static/plotly.min.js is the plotly package's bundled copy
    /api/overview          datasets, sample counts, the run catalog
    /api/scores            the scores of the current runs
    /api/samples           a page of samples: ?sort=&order=asc|desc&where=&dataset=&page=&per_page=
                           (POST the same as JSON with "ids": a map selection)
    /api/sample/{id}       one sample: scores, predictions, boxes, duplicates, nearest neighbours
    /api/duplicates, /api/leaks, /api/mistakes    ?key=&page=&per_page=
    /api/map               ?key=&color=
    /api/similar/{id}      ?k=   nearest samples in the kNN run's index
    /api/search            ?text=&k=   text search (CLIP embeddings runs)
    /api/run/{run_id}      one catalog row with its config
    /thumb/{id}            PNG thumbnail (?size=64|128|256|512); a placeholder for a bad image
    /image/{id}            the full image as PNG; a placeholder for a bad image

Bad parameters answer 400 and unknown samples or keys 404, as JSON ``{"error": ...}``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from brain import images
from brain.app import queries
from brain.app.thumbnails import ThumbnailCache, full_png, placeholder
from brain.lake import Lake

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def plotly_js() -> Path:
    """plotly.js as bundled in the plotly Python package (no CDN)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _int(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"parameter {name} must be an integer, got {value!r}") from None


def create_app(lake: Lake, *, cache_dir: str | Path | None = None) -> Starlette:
    """The app over ``lake``; thumbnails cached under ``cache_dir`` (see :class:`ThumbnailCache`)."""
    cache = ThumbnailCache(lake.uri, cache_dir)

    def api(view: Callable[[Request], Any]) -> Callable:
        async def endpoint(request: Request) -> Response:
            try:
                body = await request.json() if request.method == "POST" else None
                return JSONResponse(await run_in_threadpool(view, request, body) if body is not None
                                    else await run_in_threadpool(view, request))
            except queries.NotFound as err:
                return JSONResponse({"error": str(err)}, status_code=404)
            except ValueError as err:
                return JSONResponse({"error": str(err)}, status_code=400)
        return endpoint

    def samples_view(request: Request, body: dict | None = None) -> dict:
        params = dict(request.query_params)
        params.update(body or {})
        ids = params.get("ids")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise ValueError("ids must be a list of sample ids")
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be asc or desc, got {order!r}")
        try:
            page, per_page = int(params.get("page", 0)), int(params.get("per_page", 48))
        except (TypeError, ValueError):
            raise ValueError("page and per_page must be integers") from None
        return queries.samples(lake, sort=params.get("sort") or None, descending=order == "desc",
                               where=params.get("where") or None, ids=ids, dataset=params.get("dataset") or None,
                               page=page, per_page=per_page)

    def paged(view) -> Callable[[Request], dict]:
        return lambda request: view(lake, key=request.query_params.get("key") or None, page=_int(request, "page", 0),
                                    per_page=_int(request, "per_page", 20))

    def image_response(request: Request, thumbnail: bool) -> Response:
        sample_id = request.path_params["sample_id"]
        try:
            uri, content_hash = queries.sample_uri(lake, sample_id)
        except queries.NotFound as err:
            return JSONResponse({"error": str(err)}, status_code=404)
        if thumbnail:
            size = _int(request, "size", 128)
            data, ok = cache.png(uri, content_hash, size)
        else:
            try:
                data, ok = full_png(images.load(uri)), True
            except images.ImageError as err:
                log.warning("image placeholder: %s", err)
                data, ok = placeholder(512), False
        headers = {"Cache-Control": "max-age=3600" if ok else "no-store",
                   "X-Image-Status": "ok" if ok else "placeholder"}
        return Response(data, media_type="image/png", headers=headers)

    async def thumb(request: Request) -> Response:
        try:
            return await run_in_threadpool(image_response, request, True)
        except ValueError as err:
            return JSONResponse({"error": str(err)}, status_code=400)

    async def image(request: Request) -> Response:
        return await run_in_threadpool(image_response, request, False)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def plotly(request: Request) -> Response:
        return FileResponse(plotly_js(), media_type="text/javascript")

    routes = [
        Route("/", index),
        Route("/static/plotly.min.js", plotly),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/api/overview", api(lambda r: queries.overview(lake))),
        Route("/api/scores", api(lambda r: [s.json() for s in queries.scores(lake)])),
        Route("/api/samples", api(samples_view), methods=["GET", "POST"]),
        Route("/api/sample/{sample_id}", api(lambda r: queries.sample(lake, r.path_params["sample_id"],
                                                                      k=_int(r, "k", 8)))),
        Route("/api/duplicates", api(paged(queries.duplicate_groups))),
        Route("/api/leaks", api(paged(queries.leak_groups))),
        Route("/api/mistakes", api(paged(queries.mistakes))),
        Route("/api/map", api(lambda r: queries.map_points(lake, key=r.query_params.get("key") or None,
                                                           color=r.query_params.get("color") or None))),
        Route("/api/similar/{sample_id}", api(lambda r: queries.similar(lake, r.path_params["sample_id"],
                                                                        k=_int(r, "k", 24)))),
        Route("/api/search", api(lambda r: queries.text_search(lake, r.query_params.get("text", ""),
                                                               k=_int(r, "k", 24)))),
        Route("/api/run/{run_id}", api(lambda r: queries.run_info(lake, r.path_params["run_id"]))),
        Route("/thumb/{sample_id}", thumb),
        Route("/image/{sample_id}", image),
    ]
    return Starlette(routes=routes)


def serve(lake_uri: str, *, host: str = "127.0.0.1", port: int = 8765, cache_dir: str | None = None) -> None:
    """Run the app with uvicorn until interrupted; prints the URL to open."""
    import uvicorn

    lake = Lake(lake_uri)
    if not lake.exists("samples"):
        raise ValueError(f"{lake.uri} has no samples table: ingest a dataset first (brain ingest)")
    app = create_app(lake, cache_dir=cache_dir)
    shown = f"[{host}]" if ":" in host else host
    print(f"lake browser for {lake.uri}: http://{shown}:{port}/  (Ctrl+C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
