"""Files of runs that write: temp files and locks.

Atomic writers name their temp files `<name>.tmp<PID>`; a later run removes those of processes that no
longer exist (a kill during a save leaves one behind), never a live process's. `RunLock` keeps two runs
from writing one output at once.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_TMP_PID = re.compile(r"\.tmp(\d+)$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete `*.tmp<PID>` files in `folder` whose PID is not a running process; returns them."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TMP_PID.search(path.name)
        if match and path.is_file() and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class RunLock:
    """`<target>.lock` holding the owner's PID while one run writes `target`; a second run is refused with
    the owner named. A lock left by a dead process is taken over.

        with RunLock(out, "--out"):
            ...
    """

    def __init__(self, target: Path, flag: str):
        self.path = target.with_name(target.name + ".lock")
        self.target, self.flag = target, flag
        self._held = False

    def __enter__(self) -> "RunLock":
        from tal.errors import TalInputError

        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and pid_alive(owner):
                    raise TalInputError(f"{self.flag} {self.target}: another run (PID {owner}) is writing it; wait "
                                        f"for it to finish or choose another {self.flag} (lock: {self.path})") from None
                self.path.unlink(missing_ok=True)  # its owner died: take over
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self._held = True
            return self
        raise TalInputError(f"{self.flag} {self.target}: cannot take the lock {self.path}; remove it if no run "
                            f"is writing {self.target}")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def __exit__(self, *exc) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False
