"""The scan of `stored/` that a garbage-collection sweep needs, run in a child process.

A sweep reads two trees: the blob files in `stored/` and the links under the checkout
roots (see `gc`). Both walks are system calls driven one entry at a time by Python,
and the threads of one process take turns on the interpreter lock: on 200,000 blobs
and 2 cores, two threads scanned `stored/` in 1.5 s where one took 1.7 s, and walking
the links at the same time made both slower. A child process scans `stored/` while the
sweep walks the links, so the two walks use two cores.

This file is also the child's program. It imports nothing outside the standard library,
so `python -I -S gc_scan.py STORED SUFFIX...` starts in about 50 ms without the
package, and writes the `StoreScan` to stdout with `marshal` (the parent starts it with
its own interpreter, `sys.executable`).
"""

from __future__ import annotations

import errno
import marshal
import os
import subprocess
import sys
from dataclasses import dataclass, field

# Errors meaning "this entry is gone": no reason to stop a sweep.
GONE = frozenset({errno.ENOENT, errno.ENOTDIR})


def describe(path: str, exc: OSError) -> str:
    return f"{path}: {exc.strerror or exc} (errno {exc.errno})"


@dataclass
class StoreScan:
    """The regular blob files below some two-letter dirs of `stored/`."""

    blobs: dict[str, int] = field(default_factory=dict)  # "ab/cdef…/SIZE.blob" -> d_ino
    devs: dict[str, int] = field(default_factory=dict)  # two-letter dir name -> st_dev
    empty: list[str] = field(default_factory=list)  # dirs that held nothing at all
    errors: list[str] = field(default_factory=list)  # "path: error" of unlistable dirs

    def dev(self, key: str) -> int:
        """The device of the blob with this key."""
        return self.devs[key.partition("/")[0]]


def scan_stored(stored: str, suffixes: tuple[str, ...]) -> StoreScan:
    """The blobs (names ending in one of `suffixes`) in `stored`, by key, with the
    inode readdir gave; symlinked dirs are not entered. A dir that cannot be listed is
    reported, and its blobs are left out, so kept."""
    scan = StoreScan()
    blobs = scan.blobs
    for top in subdir_names(stored, scan.errors) or []:
        top_path = f"{stored}/{top}"
        subs = subdir_names(top_path, scan.errors)
        if subs is None:
            continue
        try:
            scan.devs[top] = os.stat(top_path).st_dev
        except OSError as exc:
            if exc.errno not in GONE:
                scan.errors.append(describe(top_path, exc))
            continue
        if not subs:
            scan.empty.append(top_path)
        for sub in subs:
            blob_dir = f"{top_path}/{sub}"
            prefix = f"{top}/{sub}/"
            held = 0
            try:
                with os.scandir(blob_dir) as it:
                    for entry in it:
                        held += 1
                        name = entry.name
                        if name.endswith(suffixes) and entry.is_file(follow_symlinks=False):
                            blobs[prefix + name] = entry.inode()
            except OSError as exc:
                if exc.errno not in GONE:
                    scan.errors.append(describe(blob_dir, exc))
                continue  # what it holds is unknown: never removed as empty
            if not held:
                scan.empty.append(blob_dir)
    return scan


def subdir_names(path: str, errors: list[str]) -> list[str] | None:
    """The names of the real subdirectories of `path`, or None if it cannot be listed
    (then the error is appended to `errors`, unless `path` is just gone)."""
    try:
        with os.scandir(path) as it:
            return [e.name for e in it if e.is_dir(follow_symlinks=False)]
    except OSError as exc:
        if exc.errno not in GONE:
            errors.append(describe(path, exc))
        return None


class ChildScan:
    """`scan_stored` in a child process, started at once; `result` waits for it."""

    def __init__(self, stored: str, suffixes: tuple[str, ...]) -> None:
        self.failure = ""  # why there is no result, once `result` returned None
        self._proc: subprocess.Popen[bytes] | None = None
        if not sys.executable:
            self.failure = "no Python interpreter to run it with"
            return
        args = [sys.executable, "-I", "-S", __file__, stored, *suffixes]
        try:
            self._proc = subprocess.Popen(
                args,  # str: POSIX encodes it as os.fsencode does, Windows takes no bytes
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except (OSError, ValueError) as exc:  # no process or descriptor left
            self.failure = f"cannot start it: {exc}"

    def result(self) -> StoreScan | None:
        """The child's scan, or None (see `failure`) if it could not give one."""
        proc = self._proc
        if proc is None:
            return None
        try:
            out, err = proc.communicate()
        except OSError as exc:
            self.failure = f"cannot read its answer: {exc}"
            return None
        finally:
            self.close()
        if proc.returncode != 0:
            last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
            self.failure = f"it ended with status {proc.returncode}: {last[0]}"
            return None
        try:
            blobs, devs, empty, errors = marshal.loads(out)
        except (EOFError, ValueError, TypeError) as exc:
            self.failure = f"its answer is not readable: {exc}"
            return None
        return StoreScan(blobs, devs, empty, errors)

    def close(self) -> None:
        """Stop the child if it still runs (a sweep that ends early)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def main() -> None:
    stored, *suffixes = sys.argv[1:]
    scan = scan_stored(stored, tuple(suffixes))
    sys.stdout.buffer.write(marshal.dumps((scan.blobs, scan.devs, scan.empty, scan.errors)))


if __name__ == "__main__":
    main()
