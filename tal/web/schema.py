"""The HTTP API's requests and answers as pydantic models, so `/openapi.json` (and the `/docs` page)
describe them. Requests are still checked by the hand-written parsers in `tal.serve` (its messages are the
API's contract, and they cost less per query); tests/test_serve.py checks that both accept the same bodies."""
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from tal.serve import (DEFAULT_DETECTIONS, DEFAULT_TOP_K, MAX_DETECTIONS, MAX_QUERY_CHARS, MAX_TOP_K)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class QueryRequest(_Strict):
    """`POST /query`: the moments of one video that a sentence describes."""

    video: str = Field(description="a video id of GET /videos")
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"[^\W_]",
                       description="the sentence (surrounding white space is ignored; at least one word)")
    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K, description="how many ranked moments to answer")


class DetectRequest(_Strict):
    """`POST /detect`: the actions a detection checkpoint finds in one video."""

    video: str = Field(description="a video id of GET /videos")
    score_threshold: float = Field(0.0, ge=0.0, le=1.0, description="leave out detections scoring below this")
    top_k: int = Field(DEFAULT_DETECTIONS, ge=1, le=MAX_DETECTIONS, description="at most this many, best first")


class Moment(BaseModel):
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    score: float = Field(description="ranks the moments of one video for one sentence; not a probability")


class QueryAnswer(BaseModel):
    moments: list[Moment] = Field(description="best first")
    warnings: Optional[list[str]] = Field(None, description="present when the answer needs a caveat, e.g. a "
                                                            "sentence with no word the text encoder knows")


class Detection(BaseModel):
    label: Optional[str] = Field(description="the class (null for a proposal head)")
    score: float
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")


class DetectAnswer(BaseModel):
    detections: list[Detection] = Field(description="best first")


class ErrorAnswer(BaseModel):
    error: str = Field(description="what was wrong and how to fix it")


class Health(BaseModel):
    status: str
    num_videos: int
    version: str
    task: str = Field(description="grounding (POST /query) or detection (POST /detect)")
    classes: Optional[list[str]] = Field(None, description="a detection checkpoint's class list")
    uploads: Optional["UploadLimits"] = Field(None, description="present when POST /uploads is enabled")


class UploadLimits(BaseModel):
    max_bytes: int
    max_duration_s: float


class VideoList(BaseModel):
    videos: list[str]


class VideoInfo(BaseModel):
    video: str
    duration: Optional[float] = Field(description="seconds, as the feature cache records it")
    file: bool = Field(description="whether GET /videos/{id}/file plays it")


class UploadStatus(BaseModel):
    video: str = Field(description="the id the video gets once its features are extracted")
    state: str = Field(description="extracting, done or failed")
    progress: float = Field(description="fraction of the clips extracted, 0 to 1")
    error: Optional[str] = Field(None, description="why it failed")


Health.model_rebuild()

ERRORS = {status: {"model": ErrorAnswer, "description": text} for status, text in (
    (400, "malformed JSON"), (404, "unknown video"), (413, "body too large"), (422, "a field breaks the rules"))}
