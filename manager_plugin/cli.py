"""`shaman-manager`: the command line (`serve`, `gc`, `fsck`).

Each subcommand is one `add_*_command(subparsers)` function listed in COMMANDS;
it registers its parser and sets `func`, which returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .config import DEFAULT_STORAGE, Config, load_config, parse_listen
from .errors import ConfigError

PROG = "shaman-manager"
EXIT_CONFIG_ERROR = 2
# The access token without putting it in the config file or on the command line.
TOKEN_ENV = "FLAMENCO_SHAMAN_MANAGER_TOKEN"


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="flamenco-manager.yaml to read")
    parser.add_argument(
        "--storage", type=Path, metavar="DIR", help="shared storage path (overrides the file)"
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file (or the embedded default) with command line overrides applied."""
    storage: Path | None = args.storage
    if args.config is not None:
        config = load_config(args.config, require_storage=storage is None)
    else:
        config = Config()
    if storage is not None:
        config.storage_path = storage.expanduser().absolute()
    listen = getattr(args, "listen", None)
    if listen is not None:
        try:
            parse_listen(listen)
        except ValueError as exc:
            raise ConfigError(f"--listen: {exc}") from None
        config.listen = listen
    return config


def existing_storage(config: Config, args: argparse.Namespace) -> None:
    """gc and fsck work on a storage that exists; say how to point them at it."""
    path = config.storage_path
    if path.is_dir():
        return
    problem = "is not a directory" if path.exists() else "does not exist"
    hint = ""
    if args.config is None and args.storage is None:
        hint = (
            f" (without --config or --storage it is ./{DEFAULT_STORAGE} in the current "
            "directory); give --storage DIR or --config flamenco-manager.yaml"
        )
    raise ConfigError(f"shared_storage_path: {path} {problem}{hint}")


def ensure_storage(config: Config) -> None:
    if config.storage_path.exists() and not config.storage_path.is_dir():
        raise ConfigError(f"shared_storage_path: {config.storage_path} is not a directory")
    try:
        config.storage_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"shared_storage_path: cannot create {config.storage_path}: {exc.strerror or exc}"
        ) from None
    if not config.storage_path.is_dir():
        raise ConfigError(f"shared_storage_path: {config.storage_path} is not a directory")


# ---- serve -----------------------------------------------------------------


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the Shaman server")
    add_config_args(parser)
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="address to listen on, e.g. ':8080' or '127.0.0.1:0'"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=f"access token for the Shaman endpoints, read from FILE (or set ${TOKEN_ENV}); "
        "overrides shaman.token",
    )
    parser.add_argument(
        "--upstream",
        metavar="URL",
        help="gateway mode: serve Shaman here and forward every other request to the "
        "Flamenco Manager at URL, e.g. http://127.0.0.1:8081 (or shaman.gateway.upstream)",
    )
    parser.set_defaults(func=cmd_serve)


def token_override(args: argparse.Namespace) -> str | None:
    """--token-file, else $FLAMENCO_SHAMAN_MANAGER_TOKEN, else None (keep the file's)."""
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(f"--token-file: cannot read {args.token_file}: {reason}") from None
        if not token:
            raise ConfigError(f"--token-file: {args.token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def cmd_serve(args: argparse.Namespace) -> int:
    from .gateway_config import configure_gateway, read_gateway_keys
    from .http.server import print_ready_line, serve_until_signal

    config = config_from_args(args)
    config.token = token_override(args) or config.token
    keys = read_gateway_keys(args.config) if args.config is not None else None
    configure_gateway(config, keys, upstream=args.upstream, listen=args.listen)
    ensure_storage(config)
    try:
        asyncio.run(serve_until_signal(config, lambda url: print_ready_line(url, config)))
    except OSError as exc:
        print(f"{PROG}: error: cannot listen on {config.listen}: {exc}", file=sys.stderr)
        return 1
    return 0


# ---- gc --------------------------------------------------------------------


def add_gc_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gc", help="run one garbage collection sweep now")
    add_config_args(parser)
    parser.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    parser.set_defaults(func=cmd_gc)


def cmd_gc(args: argparse.Namespace) -> int:
    """Exit 0 after a complete sweep, 1 when it could not see every link (and so
    deleted nothing)."""
    from .service import ShamanService

    config = config_from_args(args)
    existing_storage(config, args)
    if args.config is not None:
        from .gateway_config import read_gateway_keys

        gateway_max_age = read_gateway_keys(args.config).gc_max_age
        if gateway_max_age is not None:  # the gateway's collector keeps blobs this long
            config.gc_max_age = gateway_max_age
    stats = ShamanService(config).collect_garbage(dry_run=args.dry_run)
    verb, remove = ("would delete", "would remove") if args.dry_run else ("deleted", "removed")
    for path in stats.deleted:
        print(f"{verb} {path}")
    _print_some("cannot read store dir (its blobs are kept)", stats.store_errors)
    if stats.aborted:
        _print_some("cannot read", stats.walk_errors)
        done = (
            f"{stats.files_deleted} blobs re-checked and deleted before that"
            if stats.files_deleted
            else "nothing deleted"
        )
        print(
            f"gc aborted: {len(stats.walk_errors)} places where checkout links may live "
            f"could not be read (or the storage lock taken), so no blob is known to be "
            f"unused; {done}"
        )
        return 1
    print(
        f"{verb} {stats.files_deleted} blobs ({stats.bytes_deleted} bytes); "
        f"checked {stats.blobs_checked} blobs, saw {stats.links_seen} links, "
        f"{remove} {stats.temps_removed} stale temps and {stats.dirs_removed} dirs"
    )
    return 0


def _print_some(label: str, problems: list[str], limit: int = 20) -> None:
    for problem in problems[:limit]:
        print(f"{label}: {problem}")
    if len(problems) > limit:
        print(f"{label}: ... and {len(problems) - limit} more")


# ---- fsck ------------------------------------------------------------------


def add_fsck_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fsck", help="re-hash every blob; find stale temps and broken links in jobs/"
    )
    add_config_args(parser)
    parser.add_argument(
        "--repair",
        action="store_true",
        help="move bad blobs to file-store/quarantine/<time>/ and remove stale temps",
    )
    parser.set_defaults(func=cmd_fsck)


def cmd_fsck(args: argparse.Namespace) -> int:
    """Exit 0 when the storage is clean (or fully repaired), 1 when problems remain."""
    from .fsck import DANGLING_LINK, run_fsck

    config = config_from_args(args)
    existing_storage(config, args)
    report = run_fsck(
        config.storage_path,
        extra_checkout_paths=config.gc_extra_checkout_paths,
        repair=args.repair,
    )
    for problem in report.problems:
        print(problem)
    lost = [p.path for p in report.problems if p.kind == DANGLING_LINK]
    if lost:
        print(f"Checkouts that lost a file, whose blob is missing ({len(lost)}):")
        for link in lost:
            print(f"  {link}")
        print(
            "To heal them, submit those blend files again: the manager asks only for the "
            "blobs it lacks, so exactly these files are uploaded, and the old checkouts' "
            "links find them again (if the files still have the same content)."
        )
    print(report.summary())
    return 0 if report.ok else 1


# ---- entry point -----------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_serve_command,
    add_gc_command,
    add_fsck_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Shaman file server for Flamenco (speaks Flamenco 3's API)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The format above names no source line, thread or process: skip collecting them for
    # every record (a stack walk per access-log line; the logging docs' optimisations).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"{PROG}: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        return 130
