"""Registries by name: a dict and a decorator, so a config's `name:` picks the class or builder.

A registry may also read a Python entry-point group (`BACKBONES`: `tal.backbones`), so a package that
declares `[options.entry_points] tal.backbones = NAME = module:OBJECT` adds a backbone without any edit
of tal. Entry points are read once, on the first lookup; a broken one is a warning, not a crash.
"""
from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import Any, Callable

from tal.errors import TalInputError


class Registry:
    """Maps names to builders (classes or functions); `build(section)` calls the one `section["name"]` names."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builders: dict[str, Callable[..., Any]] = {}
        self._plugins_read = entry_point_group is None

    def _read_plugins(self) -> None:
        if self._plugins_read:
            return
        self._plugins_read = True
        for point in entry_points(group=self.entry_point_group):
            if point.name in self._builders:
                warnings.warn(f"{self.kind} {point.name!r} of entry point {point.value} is already registered; "
                              f"ignored", stacklevel=3)
                continue
            try:
                self._builders[point.name] = point.load()
            except Exception as exc:  # a third-party package must not break tal
                warnings.warn(f"{self.kind} {point.name!r}: entry point {point.value} failed to load "
                              f"({type(exc).__name__}: {exc})", stacklevel=3)

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return add

    def get(self, name: str) -> Callable[..., Any]:
        self._read_plugins()
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
        self._read_plugins()
        return sorted(self._builders)

    def in_order(self) -> list[str]:
        """Names in registration order (tal's own first, then entry points)."""
        self._read_plugins()
        return list(self._builders)

    def __contains__(self, name: str) -> bool:
        self._read_plugins()
        return name in self._builders


MODELS = Registry("model")
TASKS = Registry("task")
BACKBONES = Registry("backbone", entry_point_group="tal.backbones")


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
