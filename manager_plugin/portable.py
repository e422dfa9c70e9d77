"""Names a Windows or macOS worker cannot hold as sent (`shaman.portableNames`).

Farms mount the storage over SMB on Windows and macOS workers, whose filesystems
fold case (`A.png` and `a.png` are one file), macOS's also Unicode normalization
(NFC and NFD spellings of `é` are one name), and Windows refuses device names
(`CON`, `aux.txt`), names ending in a dot or space, and `<>:"|?*` and control
characters. Linux takes all of these, so without this check such a checkout
succeeds here and breaks on the worker. Pure functions; the policy (warn, refuse,
off) is applied by `ShamanService`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MODES = ("warn", "refuse", "off")
MAX_REPORTED = 100  # problems listed at most; the rest are counted

_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*\x00-\x1f]')
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"{port}{n}" for port in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]]
)


def name_problem(name: str) -> str | None:
    """Why one path component cannot be a name on a Windows worker, or None."""
    bad = _WINDOWS_FORBIDDEN.search(name)
    if bad is not None:
        return f"contains {bad.group()!r}, which Windows does not allow in names"
    if name.endswith((".", " ")):
        return "ends with a dot or a space, which Windows drops"
    # Windows ignores any extension, and spaces before it: "aux.txt", "NUL .tar.gz".
    stem = name.split(".", 1)[0].rstrip(" ")
    if stem.upper() in _RESERVED:
        return f"{stem!r} is a reserved device name on Windows"
    return None


def _folded(name: str) -> str:
    """The name as a case-folding, normalizing filesystem compares it."""
    if name.isascii():
        return name.lower()
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def portability_problems(checkout_path: str, paths: Iterable[str]) -> list[str]:
    """Each problem as "'path': reason", in the order found.

    Checked: every component of the checkout path and, once per directory entry, of
    the file paths (see `name_problem`); and, per directory of the checkout, two
    names that a worker's filesystem takes for one (they differ only in case, or are
    NFC and NFD spellings of one name).
    """
    problems: list[str] = []
    prefix = ""
    for part in checkout_path.split("/"):
        prefix = f"{prefix}/{part}" if prefix else part
        reason = name_problem(part)
        if reason is not None:
            problems.append(f"checkoutPath {prefix!r}: {reason}")
    children: dict[str, dict[str, str]] = {}  # dir -> folded name -> first name seen
    clashed: set[str] = set()

    def check(parent: str, part: str, here: str) -> None:
        seen = children.setdefault(parent, {})
        key = _folded(part)
        first = seen.get(key)
        if first is None:
            seen[key] = part
            reason = name_problem(part)
            if reason is not None:
                problems.append(f"{here!r}: {reason}")
        elif first != part and here not in clashed:
            clashed.add(here)
            other = f"{parent}/{first}" if parent else first
            problems.append(_clash(here, other, first, part))

    dirs: set[str] = {""}
    for path in paths:
        head, _, name = path.rpartition("/")
        if head not in dirs:  # each directory once, however many files it holds
            parent = ""
            for part in head.split("/"):
                here = f"{parent}/{part}" if parent else part
                if here not in dirs:
                    dirs.add(here)
                    check(parent, part, here)
                parent = here
        check(head, name, path)
    return problems


def _clash(here: str, other: str, first: str, second: str) -> str:
    if unicodedata.normalize("NFC", first) == unicodedata.normalize("NFC", second):
        # Both look alike when printed: show the code points.
        return (
            f"{ascii(here)}: is one name on macOS with {ascii(other)} "
            "(NFC and NFD spellings of the same characters)"
        )
    how = "only in case" if first.casefold() == second.casefold() else "in case and spelling"
    return f"{here!r}: is one name on Windows and macOS with {other!r} (they differ {how})"


def summary(problems: list[str]) -> list[str]:
    """At most MAX_REPORTED problems, and a count of the rest."""
    if len(problems) <= MAX_REPORTED:
        return problems
    rest = len(problems) - MAX_REPORTED
    return [*problems[:MAX_REPORTED], f"... and {rest} more names not portable"]
