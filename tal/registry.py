"""Registries by name: a dict and a decorator, so a config's `name:` picks the class or builder."""
from __future__ import annotations

from typing import Any, Callable

from tal.errors import TalInputError


class Registry:
    """Maps names to builders (classes or functions); `build(section)` calls the one `section["name"]` names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return add

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            known = ", ".join(sorted(self._builders)) or "none"
            raise TalInputError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._builders[name]

    def build(self, section: dict, **extra: Any) -> Any:
        """Call the builder named by `section["name"]` with the section (a dict) and `extra`."""
        if "name" not in section:
            raise TalInputError(f"the {self.kind} section has no 'name' key")
        return self.get(section["name"])(section, **extra)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders


MODELS = Registry("model")
TASKS = Registry("task")


REQUIRED_HINTS = {"input_dim": " (the feature dimension D)"}


def model_section(cfg: dict, head: str, known: set[str], required: tuple[str, ...] = ("input_dim",),
                  sections: dict[str, set[str] | dict] | None = None) -> dict:
    """A head's `model` section without `name`/`type`, refusing unknown keys (also inside the
    sub-sections named in `sections`, e.g. {"loss": LOSS_KEYS}) and missing required ones."""
    cfg = {k: v for k, v in cfg.items() if k not in ("name", "type")}
    unknown = set(cfg) - set(known)
    if unknown:
        raise TalInputError(f"unknown model key(s) for {head} {sorted(unknown)}; known: {sorted(known)}")
    for key in required:
        if key not in cfg:
            raise TalInputError(f"model.{key}{REQUIRED_HINTS.get(key, '')} is required for {head}")
    for name, allowed in (sections or {}).items():
        unknown = set(cfg.get(name) or {}) - set(allowed)
        if unknown:
            raise TalInputError(f"unknown model.{name} key(s) {sorted(unknown)}; known: {sorted(allowed)}")
    return cfg
