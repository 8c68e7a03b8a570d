"""Filesystem sink: a temporary name beside the target, fsync, then an exclusive link into place.

No partial file is ever visible under a final name: bytes go to ``.streamproxy-<id>.tmp`` in the
target's directory, are fsynced, and only then linked to the final name (``link(2)`` fails if the
name exists, which is the exclusive create; ``--overwrite`` uses ``rename(2)`` instead). Abort
unlinks the temporary file. Object metadata is kept as ``user.*`` extended attributes where the
filesystem supports them (best effort: a filesystem without xattrs still stores the recording).

A header whose sizes are known only at the end (WAV in front of headerless G.711) is written in
place over its placeholder (``patch_header``) before the rename; the sha256 of the stored file
then needs the header first, so ``complete`` reads the temporary file once more to hash it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import heapq
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from ..errors import BadRequest, KeyExists, StorageError, StorageFailed
from ..parts import PartBuffer
from . import AS_OPENED, Completion, ObjectSpec, Stored, SweepItem, WriterBase
from .outbox import OUTBOX_DIR, check_name

__all__ = ["TEMP_PREFIX", "TEMP_SUFFIX", "FileOutbox", "FileSink", "FileWriter"]

TEMP_PREFIX = ".streamproxy-"
TEMP_SUFFIX = ".tmp"
_FILE_MODE = 0o640  # recordings are personal data: not world-readable
_REREAD_CHUNK = 1024 * 1024


def _storage_error(action: str, exc: OSError) -> StorageError:
    return StorageFailed(f"could not {action}: {exc.strerror or exc}", storage_code=errno.errorcode.get(exc.errno or 0))


class FileSink:
    """Store recordings as files under ``root``."""

    def __init__(self, root: Path, *, overwrite: bool = False) -> None:
        self.root = root
        self.overwrite = overwrite
        self.description = root.as_uri()

    async def start(self) -> None:
        """Create the root directory if needed and check that it is writable."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error(f"create {self.root}", exc) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageFailed(f"{self.root} is not writable")

    async def close(self) -> None:
        """Nothing to release."""

    def outbox_store(self) -> FileOutbox:
        """Return the notification outbox: files under ``<root>/.streamproxy-outbox/``."""
        return FileOutbox(self.root / OUTBOX_DIR)

    def path_for(self, key: str) -> Path:
        """Map a key to a path, refusing any key that would leave the root."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise BadRequest(f"the key {key!r} would leave the storage directory", code="invalid_key")
        return path

    async def open(self, spec: ObjectSpec) -> FileWriter:
        """Create the temporary file next to where the recording will land."""
        directory = self.path_for(spec.key).parent if spec.key is not None else self.root
        temp = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"

        def create() -> int:
            directory.mkdir(parents=True, exist_ok=True)
            return os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)

        try:
            fd = await asyncio.to_thread(create)
        except OSError as exc:
            raise _storage_error(f"create a file in {directory}", exc) from None
        return FileWriter(self, spec, temp, fd)

    async def probe(self) -> None:
        """Check that the root directory exists and is writable (a stat and an access check, no write)."""

        def check() -> None:
            if not self.root.is_dir():
                raise StorageFailed(f"{self.root} is not a directory", storage_code="ENOTDIR")
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise StorageFailed(f"{self.root} is not writable", storage_code="EACCES")

        await asyncio.to_thread(check)

    async def sweep(self, older_than: float, *, dry_run: bool, now: float | None = None) -> list[SweepItem]:
        """Remove temporary files older than ``older_than`` seconds left by crashed uploads."""
        return await asyncio.to_thread(self._sweep, older_than, dry_run, time.time() if now is None else now)

    def _sweep(self, older_than: float, dry_run: bool, now: float) -> list[SweepItem]:
        found: list[SweepItem] = []
        if not self.root.is_dir():
            return found
        for path in self.root.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < older_than:
                continue
            error = None
            if not dry_run:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    error = f"could not delete: {exc.strerror or exc}"
            found.append(SweepItem("temp_file", str(path.relative_to(self.root)), age, error))
        return found


class FileWriter(WriterBase):
    """Writes parts to the temporary file, one write in flight while the next part fills."""

    def __init__(self, sink: FileSink, spec: ObjectSpec, temp: Path, fd: int) -> None:
        self._sink = sink
        self._spec = spec
        self._temp = temp
        self._fd: int | None = fd
        self._pending: asyncio.Task[None] | None = None
        self._completed = False  # linked into place: abort() has nothing left to undo
        self._parts = 0
        self._patched = False

    async def patch_header(self, header: bytes) -> None:
        """Overwrite the placeholder at the start of the file with ``header``."""
        await self._wait_pending()
        assert self._fd is not None
        fd = self._fd

        def patch() -> None:
            if os.pwrite(fd, header, 0) != len(header):
                raise OSError(errno.EIO, "short write of the header")

        try:
            await asyncio.to_thread(patch)
        except OSError as exc:
            raise _storage_error("write the header", exc) from None
        self._patched = True

    async def write(self, part: PartBuffer, *, last: bool = False) -> None:
        """Queue the part for writing; waits for the previous write so at most one is in flight."""
        try:
            await self._wait_pending()
        except BaseException:
            part.release()
            raise
        self._parts += 1
        self._pending = asyncio.ensure_future(self._write(part))

    async def _write(self, part: PartBuffer) -> None:
        try:
            await asyncio.to_thread(self._write_all, part.view)
        finally:
            part.release()

    def _write_all(self, view: memoryview) -> None:
        assert self._fd is not None
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def _wait_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                await pending
            except OSError as exc:
                raise _storage_error("write the recording", exc) from None

    async def complete(self, done: Completion = AS_OPENED) -> Stored:
        """Flush, fsync and link the file into place; abort and raise on any failure (files have no tags)."""
        try:
            key = done.key_for(self._spec)
            target = self._sink.path_for(key)
            await self._wait_pending()
            merged = {"mime_type": self._spec.content_type, **self._spec.metadata, **done.metadata}
            digest = await asyncio.to_thread(self._hash_file) if self._patched else None
            if digest is not None:
                merged["sha256"] = digest
            await asyncio.to_thread(self._finish, target, merged)
        except BaseException:
            await self.abort()
            raise
        self._completed = True
        return Stored(key=key, url=target.as_uri(), parts=self._parts, sha256=digest)

    def _hash_file(self) -> str:
        """Hash the temporary file from its start (the header was written last, in front)."""
        assert self._fd is not None
        sha = hashlib.sha256()
        offset = 0
        try:
            while chunk := os.pread(self._fd, _REREAD_CHUNK, offset):
                sha.update(chunk)
                offset += len(chunk)
        except OSError as exc:
            raise _storage_error("read the recording back", exc) from None
        return sha.hexdigest()

    def _finish(self, target: Path, metadata: Mapping[str, str]) -> None:
        assert self._fd is not None
        for name, value in metadata.items():
            try:
                os.setxattr(self._fd, f"user.{name}", value.encode("utf-8"))
            except OSError:
                break  # no xattr support here: the recording matters, its metadata is a bonus
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            target.parent.mkdir(parents=True, exist_ok=True)
            if self._sink.overwrite:
                os.replace(self._temp, target)
            else:
                os.link(self._temp, target)
                os.unlink(self._temp)
            dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except FileExistsError:
            raise KeyExists(f"{target.name!r} already exists") from None
        except OSError as exc:
            raise _storage_error("store the recording", exc) from None

    async def abort(self) -> None:
        """Stop any write, close and unlink the temporary file. Idempotent; nothing to do after a complete."""
        if self._completed:
            return
        pending, self._pending = self._pending, None
        if pending is not None:
            # Let the thread finish with the buffer before it goes back to the pool.
            await asyncio.gather(pending, return_exceptions=True)
        fd, self._fd = self._fd, None

        def remove() -> None:
            if fd is not None:
                os.close(fd)
            self._temp.unlink(missing_ok=True)

        await asyncio.shield(asyncio.to_thread(remove))


class FileOutbox:
    """The notification outbox as files (``streamproxy.sinks.outbox``): written whole, fsynced, then linked.

    ``put_new`` is ``link(2)``, which fails if the name exists, so two servers sharing the
    directory (NFS included) cannot both create one lease. Each blocking call runs in a thread.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = root.as_uri()

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def _write(self, name: str, data: bytes, *, exclusive: bool, durable: bool) -> bool:
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        try:
            try:
                os.write(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                try:
                    os.link(temp, target)
                except FileExistsError:
                    return False
            else:
                os.replace(temp, target)
            if durable:
                dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            return True
        finally:
            temp.unlink(missing_ok=True)

    async def put(self, name: str, data: bytes, *, durable: bool = True) -> None:
        """Write ``name`` whole, replacing it (``rename(2)``); fsynced with its directory if ``durable``."""
        try:
            await asyncio.to_thread(self._write, name, data, exclusive=False, durable=durable)
        except OSError as exc:
            raise _storage_error(f"write outbox entry {name}", exc) from None

    async def put_new(self, name: str, data: bytes, *, durable: bool = True) -> bool:
        """Write ``name`` whole only if it does not exist (``link(2)``)."""
        try:
            return await asyncio.to_thread(self._write, name, data, exclusive=True, durable=durable)
        except OSError as exc:
            raise _storage_error(f"write outbox entry {name}", exc) from None

    async def get(self, name: str) -> bytes | None:
        """Read ``name``, or ``None`` if it is gone."""
        path = self._path(name)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error(f"read outbox entry {name}", exc) from None

    async def delete(self, name: str) -> None:
        """Unlink ``name`` if it exists."""
        path = self._path(name)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise _storage_error(f"delete outbox entry {name}", exc) from None

    def _list(self, prefix: str, after: str, limit: int) -> list[str]:
        folder, _, stem = prefix.rpartition("/")
        directory = self._path(folder) if folder else self.root
        try:
            entries = os.scandir(directory)
        except FileNotFoundError:
            return []
        with entries:
            base = f"{folder}/" if folder else ""
            names = (
                base + entry.name
                for entry in entries
                if entry.name.startswith(stem) and not entry.name.startswith(".") and entry.is_file()
            )
            # One pass over the directory keeping only the ``limit`` smallest names: memory stays at a page.
            return heapq.nsmallest(limit, (name for name in names if name > after))

    async def list(self, prefix: str, *, after: str = "", limit: int = 100) -> list[str]:
        """List up to ``limit`` names that start with ``prefix`` and sort after ``after``, in order."""
        try:
            return await asyncio.to_thread(self._list, prefix, after, limit)
        except OSError as exc:
            raise _storage_error("list the outbox", exc) from None
