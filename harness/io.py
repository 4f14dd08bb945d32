"""Files the harness writes and reads: one writer per folder, atomic replacement, strict readers.

- ``FolderLock``: an advisory lock (``fcntl.flock`` on ``<folder>/.lock``, which holds the writer's PID).
  A second writer is refused with ``FolderBusy`` naming that process. The kernel releases the lock when
  its process dies, so a killed run never blocks the next one.
- ``atomic_write``: every artefact is written to a temporary file in the same folder, fsynced, and renamed
  over its final name, so a reader (or a kill) sees the old file or the new one, never half of one.
- ``read_csv_records`` / ``read_json_object``: strict readers. A damaged file raises ``DamagedFile`` naming
  the file, the line and the fix; nothing here ever modifies a file it reads.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
import re
import tempfile

LOCK_NAME = ".lock"


class DamagedFile(ValueError):
    """A file that cannot be read as what it should be; the message names the file, the line and the fix."""


class FolderBusy(RuntimeError):
    """Another live process holds the folder's lock."""

    def __init__(self, folder: str, pid: str):
        self.folder, self.pid = folder, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"{folder} is being written by {who}; wait for it or choose another --out")


# ============================================================================ one writer per folder
class FolderLock:
    """Exclusive, non-blocking advisory lock on ``<folder>/.lock``; re-entrant within one process.

    The CLI may take it early (before compiling kernels, say) and the results writer takes it again
    inside the same process without conflict; the lock is let go when the last holder releases it.

    >>> with FolderLock("reports/quick-x"):      # doctest: +SKIP
    ...     ...                                   # this process is the folder's only writer
    """

    _held: dict[str, list] = {}   # real path of the lock file -> [fd, holders] in this process

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._key: str | None = None

    def acquire(self) -> "FolderLock":
        if self._key is not None:
            return self
        key = os.path.realpath(self.path)
        held = FolderLock._held.get(key)
        if held is not None:
            held[1] += 1
            self._key = key
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            try:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                pid = ""
            os.close(fd)
            raise FolderBusy(self.folder, pid if pid.isdigit() else "") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        FolderLock._held[key] = [fd, 1]
        self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        held = FolderLock._held[self._key]
        held[1] -= 1
        if held[1] == 0:
            # NOTE: the file itself stays: removing it would let a third process lock a fresh inode while a
            # second one still waits on the old one.
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])
            del FolderLock._held[self._key]
        self._key = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ============================================================================ atomic writes
def lock_folder_of(path: str, error: type) -> "FolderLock":
    """Create the folder of the file ``path`` and take its writer lock; a folder that cannot be made or
    written, or that another live process is writing, raises ``error`` naming the fix."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise error(f"{folder} is a file, not a folder; choose another --out") from None
    try:
        return FolderLock(folder).acquire()
    except FolderBusy as err:
        raise error(str(err)) from None
    except OSError as err:
        raise error(f"{folder}: cannot write there ({err.strerror}); choose another --out") from None


def truncate_file(path: str, size: int) -> None:
    """Cut ``path`` to ``size`` bytes and fsync it (dropping a torn last record a killed writer left)."""
    with open(path, "r+b") as fh:
        fh.truncate(size)
        os.fsync(fh.fileno())


class LockedWriter:
    """Base of the appending writers that hold their folder's lock (``lock_folder_of``): ``close()`` closes
    the files ``_files()`` names, then releases the lock; usable as a ``with`` block."""

    _lock: FolderLock

    def _files(self) -> tuple:
        return ()

    def close(self) -> None:
        try:
            for fh in self._files():
                if fh is not None:
                    fh.close()
        finally:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse to open folders)."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, binary: bool = False, newline: str | None = None):
    """Open a temporary file beside ``path`` for writing; on success fsync it and rename it over ``path``.

    On an exception (or a kill) ``path`` keeps its old content and the temporary file is removed
    (a kill leaves a hidden ``.<name>.*.tmp`` that nothing reads).

    >>> with atomic_write("out/env.json") as fh:   # doctest: +SKIP
    ...     fh.write("{}")
    """
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a folder; cannot write a file under that name", path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline=newline)) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(folder)


def write_text(path: str, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def write_json(path: str, obj) -> None:
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


# ============================================================================ strict readers
def read_bytes(path: str, what: str) -> bytes:
    """The bytes of ``path``; DamagedFile when it is a folder or cannot be read."""
    if os.path.isdir(path):
        raise DamagedFile(f"{path} is a folder, not a {what} file; move it away (the harness writes the file "
                          "itself) or choose another --out")
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise DamagedFile(f"{path}: cannot be read ({err.strerror}); fix its permissions or choose another "
                          "--out") from None


def _decode(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DamagedFile(f"{path}, line {line}: not UTF-8 (byte {err.start}: {data[err.start:err.start + 4]!r}); "
                          "the harness writes UTF-8, so another program changed this file; fix or delete that "
                          "line, or move the file away") from None


class CsvRecords:
    """What ``read_csv_records`` found: the header, complete records and a torn tail (if any).

    header: (line number, fields) of the first record, or None for a file without records;
    records: [(first line number, fields)] after it; torn_line: the line where an incomplete last record starts
    (None when the file ends cleanly); keep_bytes: the length of the file without that torn record.
    """

    def __init__(self, header, records, torn_line, keep_bytes):
        self.header, self.records, self.torn_line, self.keep_bytes = header, records, torn_line, keep_bytes


_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")


def read_csv_records(path: str, data: bytes | None = None) -> CsvRecords:
    """Parse a CSV file record by record, remembering line numbers; never modifies the file.

    A last record without its line end (the writer died mid-row), or one ending inside a quoted field, is
    reported as torn, not parsed. Every record before it is complete. Blank lines are skipped.
    """
    if data is None:
        data = read_bytes(path, "CSV")
    cut = len(data) if data.endswith(b"\n") else data.rfind(b"\n") + 1
    head = _decode(path, data[:cut])
    # NOTE: the last partial line may stop inside a multi-byte character; it is torn anyway.
    text = head + data[cut:].decode("utf-8", "replace")
    lines = _LINE.findall(text)
    consumed = [0]

    def feed():
        for ln in lines:
            consumed[0] += 1
            yield ln

    reader = csv.reader(feed(), strict=True)
    records, start = [], 1
    torn = None
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            if consumed[0] == len(lines) and "end of data" in str(err):
                torn = start
                break
            raise DamagedFile(f"{path}, line {start}: not valid CSV ({err}); fix or delete that line, or move the "
                              "file away") from None
        if consumed[0] == len(lines) and not data.endswith(b"\n"):
            torn = start
            break
        if fields:
            records.append((start, fields))
        start = consumed[0] + 1
    keep = len("".join(lines[:torn - 1]).encode("utf-8")) if torn is not None else len(data)
    header = records.pop(0) if records else None
    return CsvRecords(header, records, torn, keep)


def read_json_object(path: str, what: str, fix: str) -> dict:
    """A JSON object from ``path``; DamagedFile (naming the line and ``fix``) for anything else."""
    data = read_bytes(path, what)
    text = _decode(path, data)
    if not text.strip():
        raise DamagedFile(f"{path} is empty (a process was killed while writing it?); {fix}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise DamagedFile(f"{path}, line {err.lineno}: not valid JSON ({err.msg}); {fix}") from None
    if not isinstance(obj, dict):
        raise DamagedFile(f"{path}: holds a JSON {type(obj).__name__}, not an object; {fix}")
    return obj
