"""tal: find when things happen in long, untrimmed videos."""

__version__ = "0.1.0"

__all__ = ["ActionDetector", "MomentRetriever", "__version__"]


def __getattr__(name: str):
    """`tal.MomentRetriever` / `tal.ActionDetector` without importing torch on `import tal`."""
    if name in ("MomentRetriever", "ActionDetector"):
        from tal import api

        return getattr(api, name)
    raise AttributeError(f"module 'tal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
