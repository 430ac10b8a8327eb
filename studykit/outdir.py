"""The results folder of a run: staged beside ``--out``, moved into place only on success.

A run never writes into ``OUT`` directly. :class:`StagedOutput`

1. checks ``OUT`` (a file, or a non-empty folder without studykit results, is refused);
2. takes a lock (``.<OUT>.studykit-lock`` beside ``OUT``, an exclusive ``flock``): a second
   run into the same ``OUT`` is refused at once with a clear message;
3. gives the run a temporary folder beside ``OUT`` (same file system, so the final move is a
   rename) to write everything into;
4. on success (:meth:`StagedOutput.commit`) swaps it into place: the old ``OUT`` is renamed
   aside, the new one renamed to ``OUT``, entries of the old ``OUT`` that the run does not own
   (e.g. a ``--data`` folder kept inside it) are moved into the new one, then the old one is
   deleted;
5. on any failure (a user error, a bug, ``KeyboardInterrupt``) deletes the temporary folder:
   the old results are left exactly as they were.

Write errors of the operating system that the user can fix (no space left, read-only or
not-writable folder, quota) become :class:`~studykit.errors.InputError` (exit 2) with the
folder and the fix (:func:`os_error_message`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from studykit.errors import InputError

__all__ = [
    "MARKER",
    "USER_FIXABLE_ERRNOS",
    "OutputGuard",
    "StagedOutput",
    "os_error_message",
]

#: File that marks a folder as holding studykit results (so a re-run may replace them).
MARKER = ".studykit-results"
#: OS errors a user can fix (disk full, quota, read-only file system, permissions).
USER_FIXABLE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
)


def os_error_message(exc: OSError, what: str) -> str:
    """A message for a write error the user can fix, naming the file and the fix.

    Examples
    --------
    >>> import errno
    >>> os_error_message(OSError(errno.ENOSPC, "No space left on device", "out/x.png"), "--out")
    "cannot write 'out/x.png' (--out): no space left on the device. Free disk space, or choose an --out folder on another disk."
    """
    where = f"{str(exc.filename)!r} ({what})" if exc.filename else what
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (
            f"cannot write {where}: no space left on the device. Free disk space, or choose "
            "an --out folder on another disk."
        )
    if exc.errno == errno.EROFS:
        return (
            f"cannot write {where}: the file system is read-only. Choose an --out folder on a "
            "writable disk."
        )
    return (
        f"cannot write {where}: permission denied. Choose an --out folder you can write to, "
        "or change the folder's permissions."
    )


class StagedOutput:
    """Context manager: a locked temporary results folder, moved to ``out`` on success.

    Parameters
    ----------
    out : Path
        The results folder the user asked for (``--out``).
    owned : collection of str
        Names of the entries of ``out`` a run writes (replaced by a new run); every other
        entry of an existing ``out`` is kept.

    Attributes
    ----------
    path : Path
        The temporary folder to write into (valid inside the ``with`` block).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> base = pathlib.Path(tempfile.mkdtemp())
    >>> with StagedOutput(base / "results", owned=["a.txt"]) as staged:
    ...     _ = (staged.path / "a.txt").write_text("new")
    ...     staged.commit()
    >>> (base / "results" / "a.txt").read_text()
    'new'
    """

    def __init__(self, out: Path, *, owned: tuple[str, ...] | list[str]) -> None:
        self.out = Path(out)
        self.owned = frozenset(owned) | {MARKER}
        self._lock_fd: int | None = None
        self._lock_path = self.out.parent / f".{self.out.name}.studykit-lock"
        self._path: Path | None = None
        self._committed = False

    @property
    def path(self) -> Path:
        if self._path is None:
            raise RuntimeError("StagedOutput.path is only valid inside the 'with' block")
        return self._path

    # ---------------------------------------------------------------- checks and lock
    def _check(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise InputError(
                f"--out {str(out)!r} is a file, not a folder. Give a folder for the results "
                "(a new one, or one a previous 'studykit run' wrote)."
            )
        parent = out.parent
        if parent.exists() and not parent.is_dir():
            raise InputError(
                f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder. Give a results "
                "folder whose parent is a folder."
            )
        if out.is_dir() and any(out.iterdir()):
            if not (out / "manifest.json").is_file() and not (out / MARKER).is_file():
                raise InputError(
                    f"--out {str(out)!r} exists, is not empty and holds no studykit results "
                    "(no manifest.json). Choose a new or empty folder so nothing of yours is "
                    "overwritten."
                )

    def _lock(self) -> None:
        path = self._lock_path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise InputError(
                f"another 'studykit run' is writing to {str(self.out)!r} (lock {path} is held). "
                "Wait for it to finish, or choose another --out."
            ) from exc
        # the lock file may have been removed (and re-created) by a run that just finished
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            raise InputError(
                f"another 'studykit run' has just written to {str(self.out)!r}; try again."
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            self._lock_path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)  # closing releases the flock
        self._lock_fd = None

    def _recover(self) -> None:
        """Clean up after a run that was killed (we hold the lock: no run is active).

        A run killed between moving the old results aside and the new ones into place left
        ``OUT`` missing and ``.OUT.studykit-old-*`` beside it: those old results are put back.
        Temporary folders of killed runs are deleted.
        """
        parent, name = self.out.parent, self.out.name
        olds = sorted(parent.glob(f".{name}.studykit-old-*"))
        if olds and not self.out.exists():
            os.rename(olds[-1], self.out)
            olds = olds[:-1]
        for stale in [*olds, *parent.glob(f".{name}.studykit-tmp-*")]:
            shutil.rmtree(stale, ignore_errors=True)

    # ---------------------------------------------------------------- context manager
    def __enter__(self) -> StagedOutput:
        self._check()
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        except OSError as exc:
            if exc.errno in USER_FIXABLE_ERRNOS:
                raise InputError(os_error_message(exc, "--out")) from exc
            raise
        try:
            self._recover()
            self._check()
        except BaseException:
            self._unlock()
            raise
        try:
            self._path = Path(
                tempfile.mkdtemp(prefix=f".{self.out.name}.studykit-tmp-", dir=self.out.parent)
            )
        except OSError as exc:
            self._unlock()
            if exc.errno in USER_FIXABLE_ERRNOS:
                raise InputError(os_error_message(exc, "--out")) from exc
            raise
        except BaseException:
            self._unlock()
            raise
        try:
            (self._path / MARKER).write_text(
                "This folder holds results written by 'studykit run'; a new run replaces them.\n",
                encoding="utf-8",
            )
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            if isinstance(exc, OSError) and exc.errno in USER_FIXABLE_ERRNOS:
                raise InputError(os_error_message(exc, "--out")) from exc
            raise
        return self

    def commit(self) -> None:
        """Move the finished results into place (old results replaced, others kept)."""
        staged = self.path
        out = self.out
        old: Path | None = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.studykit-old-", dir=out.parent))
            os.rmdir(old)
            os.rename(out, old)
        try:
            os.rename(staged, out)
        except BaseException:
            if old is not None:
                os.rename(old, out)
            raise
        self._committed = True
        if old is not None:
            for entry in sorted(old.iterdir()):
                if entry.name not in self.owned and not (out / entry.name).exists():
                    os.rename(entry, out / entry.name)
            shutil.rmtree(old, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed and self._path is not None:
                shutil.rmtree(self._path, ignore_errors=True)
        finally:
            self._unlock()


def _stamp(path: Path) -> tuple[int, int] | None:
    """(modification time, size) of a file; None when absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


class OutputGuard:
    """What a command's output paths held before it ran; after an interrupt, what it left.

    Taken by the command line before a command starts (the paths of its output options:
    ``-o``, ``--out``, ``--report``, ``--csv``). :meth:`undo` removes what the command
    created (a new file or folder with the folders it made for it, new entries of an
    existing folder, companion files named
    ``<stem>_*`` beside an output file, e.g. ``nights_problems.csv``) and lists the existing
    files it changed, which cannot be restored. ``studykit run`` writes into a staged folder
    (:class:`StagedOutput`), so an interrupted run leaves nothing to undo.

    Parameters
    ----------
    paths : iterable of path
        The command's output paths.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> guard = OutputGuard([d / "nights.csv"])
    >>> _ = (d / "nights_problems.csv").write_text("half a table")
    >>> removed, changed = guard.undo()
    >>> [p.name for p in removed], changed, sorted(p.name for p in d.iterdir())
    (['nights_problems.csv'], [], [])
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        self._paths = [Path(p) for p in paths]
        self._existed: dict[Path, bool] = {}
        self._stamps: dict[Path, tuple[int, int] | None] = {}
        self._entries: dict[Path, set[str]] = {}
        self._siblings: dict[Path, set[str]] = {}
        self._new_roots: dict[Path, Path] = {}
        for p in self._paths:
            self._existed[p] = p.exists() or p.is_symlink()
            if not self._existed[p]:  # the topmost folder it would create (mkdir -p)
                root = p
                while not root.parent.exists() and root.parent != root:
                    root = root.parent
                self._new_roots[p] = root
            if p.is_dir():
                self._entries[p] = self._names(p)
                for name in self._entries[p]:
                    entry = p / name
                    self._stamps[entry] = _stamp(entry) if entry.is_file() else None
            else:
                self._stamps[p] = _stamp(p)
                if p.suffix:
                    self._siblings[p] = self._companions(p)

    @staticmethod
    def _names(folder: Path) -> set[str]:
        try:
            return {e.name for e in folder.iterdir()}
        except OSError:
            return set()

    @staticmethod
    def _companions(p: Path) -> set[str]:
        try:
            return {e.name for e in p.parent.glob(f"{glob.escape(p.stem)}_*")}
        except OSError:
            return set()

    def undo(self) -> tuple[list[Path], list[Path]]:
        """Remove what the command created; ``(removed, changed)`` paths.

        ``changed`` are files that existed before and differ now (rewritten in part: they
        cannot be restored and are left as they are).
        """
        removed: list[Path] = []
        changed: list[Path] = []
        for p in self._paths:
            if not self._existed[p]:
                root = self._new_roots[p]
                if root.exists() or root.is_symlink():
                    _remove(root)
                    removed.append(root)
            elif p in self._entries:
                for name in sorted(self._names(p) - self._entries[p]):
                    _remove(p / name)
                    removed.append(p / name)
                for name in sorted(self._entries[p]):
                    entry = p / name
                    if self._stamps.get(entry) is not None and _stamp(entry) != self._stamps[entry]:
                        changed.append(entry)
            elif _stamp(p) != self._stamps[p]:
                changed.append(p)
            if p in self._siblings:
                for name in sorted(self._companions(p) - self._siblings[p]):
                    _remove(p.parent / name)
                    removed.append(p.parent / name)
        return removed, changed
