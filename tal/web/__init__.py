"""The pieces of `tal serve` beyond the query API: tal's web page (`static/`, shipped as package data),
the declared request/response schema, the video files it plays and the videos it is given by upload."""
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
