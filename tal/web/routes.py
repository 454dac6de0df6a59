"""The routes of `tal serve` beyond the model's: the videos (info and file), uploads, and the page itself.

Refusals raise `tal.serve.RequestError`, so they get the API's `{"error": reason}` answers.
"""
from pathlib import Path
from typing import Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from tal.errors import TalInputError
from tal.serve import RequestError
from tal.web import STATIC, schema
from tal.web.uploads import Uploads
from tal.web.videos import VideoFiles, media_type

UPLOAD_CHUNK_BYTES = 1 << 20


def add_video_routes(app: FastAPI, catalog, files: VideoFiles, duration_of: Callable[[str], Optional[float]]) -> None:
    """`GET /videos/{id}` (duration, whether a file plays) and `GET /videos/{id}/file` (range requests)."""

    def known(video: str) -> str:
        if video not in catalog:
            raise RequestError(404, f"unknown video {video[:100]!r}: GET /videos lists the {len(catalog)} "
                                    "videos this server answers for")
        return video

    @app.get("/videos/{video:path}/file", responses={**schema.ERRORS, 206: {"description": "a byte range"}},
             response_class=FileResponse)
    async def video_file(video: str):
        path = files.get(known(video))
        if path is None:
            raise RequestError(404, f"no video file for {video[:100]!r}: start tal serve with --videos DIR "
                                    "(files named by video id) or --video-map")
        return FileResponse(path, media_type=media_type(path))  # answers Range with 206 and Content-Range

    @app.get("/videos/{video:path}", response_model=schema.VideoInfo, responses=schema.ERRORS)
    async def video_info(video: str):
        try:
            duration = await run_in_threadpool(duration_of, known(video))
        except TalInputError as exc:
            raise RequestError(422, str(exc)) from None
        return JSONResponse({"video": video, "duration": duration, "file": video in files})


def add_upload_routes(app: FastAPI, uploads: Uploads, catalog) -> None:
    """`POST /uploads?name=FILE` (the video file as the body) and `GET /uploads/{id}` (its progress)."""
    limit = uploads.limits.max_bytes

    @app.post("/uploads", status_code=202, response_model=schema.UploadStatus, responses=schema.ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                  "schema": {"type": "string", "format": "binary"}}}}})
    async def upload(request: Request, name: str):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"the video is {int(declared) / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB")
        try:
            video, suffix = uploads.reserve(name, catalog)
        except TalInputError as exc:
            raise RequestError(422, str(exc)) from None
        path = uploads.folder / f"{video}{suffix}"
        try:
            await _receive(request, path.with_name(path.name + ".part"), limit)
            await run_in_threadpool(uploads.check, path.with_name(path.name + ".part"))
            path.with_name(path.name + ".part").replace(path)
        except (RequestError, TalInputError) as exc:
            path.with_name(path.name + ".part").unlink(missing_ok=True)
            uploads.drop(video)
            if isinstance(exc, RequestError):
                raise
            raise RequestError(422, str(exc)) from None
        return JSONResponse(uploads.start(video, path).to_json(), status_code=202)

    @app.get("/uploads/{video}", response_model=schema.UploadStatus, responses=schema.ERRORS)
    async def upload_status(video: str):
        job = uploads.jobs.get(video)
        if job is None:
            raise RequestError(404, f"no upload named {video[:100]!r}")
        return JSONResponse(job.to_json())


async def _receive(request: Request, path: Path, limit: int) -> None:
    """Stream the body into `path`, refused with 413 as soon as it passes `limit` bytes."""
    size = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the video is over the limit of {limit / 2**20:g} MB")
            out.write(chunk)
    if size == 0:
        raise RequestError(422, "the upload is empty: send the video file as the request body")


def add_page_routes(app: FastAPI) -> None:
    """`GET /` (the page), `GET /docs` (the API reference, drawn from /openapi.json) and `/static/*`."""
    pages = {name: (STATIC / f"{name}.html").read_text(encoding="utf-8") for name in ("index", "docs")}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(pages["index"])

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs():
        return HTMLResponse(pages["docs"])

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
