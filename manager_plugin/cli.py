"""`shaman-manager`: the command line (`serve`, `gc`, `fsck`).

Each subcommand is one `add_*_command(subparsers)` function listed in COMMANDS;
it registers its parser and sets `func`, which returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import Config, load_config, parse_listen
from .errors import ConfigError

PROG = "shaman-manager"
EXIT_CONFIG_ERROR = 2


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


def ensure_storage(config: Config) -> None:
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
        "--upstream",
        metavar="URL",
        help="gateway mode: serve Shaman here and forward every other request to the "
        "Flamenco Manager at URL, e.g. http://127.0.0.1:8081 (or shaman.gateway.upstream)",
    )
    parser.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from .gateway_config import configure_gateway, read_gateway_keys
    from .http.server import print_ready_line, serve_until_signal

    config = config_from_args(args)
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
    from .service import ShamanService

    config = config_from_args(args)
    if not config.storage_path.is_dir():
        raise ConfigError(f"shared_storage_path: {config.storage_path} is not a directory")
    if args.config is not None:
        from .gateway_config import read_gateway_keys

        gateway_max_age = read_gateway_keys(args.config).gc_max_age
        if gateway_max_age is not None:  # the gateway's collector keeps blobs this long
            config.gc_max_age = gateway_max_age
    stats = ShamanService(config).collect_garbage(dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for path in stats.deleted:
        print(f"{verb} {path}")
    print(
        f"{verb} {stats.files_deleted} blobs ({stats.bytes_deleted} bytes); "
        f"checked {stats.blobs_checked} blobs, saw {stats.links_seen} links, "
        f"removed {stats.temps_removed} stale temps and {stats.dirs_removed} dirs"
    )
    return 0


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
    from .fsck import run_fsck

    config = config_from_args(args)
    if not config.storage_path.is_dir():
        raise ConfigError(f"shared_storage_path: {config.storage_path} is not a directory")
    report = run_fsck(
        config.storage_path,
        extra_checkout_paths=config.gc_extra_checkout_paths,
        repair=args.repair,
    )
    for problem in report.problems:
        print(problem)
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
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"{PROG}: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        return 130
