"""`shaman-submit`: send a .blend file and everything it needs to a Flamenco manager,
then create its render job there, as Flamenco's Submit does.

A thin front end over the engine: parses arguments, works out the job's settings (from
--set, the blend's own scene, the job type's defaults), draws a progress bar on a
terminal, prints missing assets, the manager's warnings (on standard error) and what was
uploaded, then the blend file's path on the
farm and, as its last line of standard output, the job's ID (with --no-job the farm path
is the last line).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .engine import Submission, SubmitCancelled, SubmitError, SubmitOptions, SubmitResult
from .engine.flamenco import DEFAULT_JOB_TYPE, FlamencoAPI, JobSpec
from .engine.flamenco.blendjob import job_spec_for_blend
from .engine.submission import check_local_inputs
from .progress_bar import ProgressBar, human_bytes

PROG = "shaman-submit"
MANAGER_URL_ENV = "FLAMENCO_MANAGER_URL"
# The token without the command line, where `ps` shows it to every user.
TOKEN_ENV = "FLAMENCO_SHAMAN_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shaman-submit",
        description="Send a .blend file and every file it needs to a Flamenco manager's "
        "Shaman storage and create its render job; print the blend file's path on the farm "
        "and, last, the job's ID.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("blendfile", type=Path, help="the .blend file to submit")
    parser.add_argument(
        "--manager",
        metavar="URL",
        help=f"manager URL, e.g. http://farm:8080/ (default: ${MANAGER_URL_ENV})",
    )
    parser.add_argument(
        "--project",
        type=Path,
        metavar="DIR",
        help="project root; paths in the checkout are relative to it "
        "(default: the blend file's directory)",
    )
    parser.add_argument(
        "--checkout-path",
        metavar="P",
        help="checkout directory under the manager's jobs directory "
        "(default: <blend name>-<YYYYmmdd-HHMMSS>)",
    )
    parser.add_argument(
        "--relative-only",
        action="store_true",
        help="only send assets referenced by relative paths (skip absolute ones)",
    )
    # One pattern per flag: `--exclude '*.png' scene.blend` must leave the blend alone.
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip assets whose path matches a glob pattern, matched from the right "
        "(e.g. '*.mov', 'renders/*'); repeat the flag for more patterns",
    )
    parser.add_argument(
        "--jobs", type=_positive, metavar="N", help="hashing threads (default: CPU count)"
    )
    parser.add_argument(
        "--uploads", type=_positive, default=4, metavar="N", help="parallel uploads (default: 4)"
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        metavar="T",
        help=f"bearer token for the manager, if it needs one (visible in `ps`: prefer "
        f"--token-file or ${TOKEN_ENV})",
    )
    token.add_argument(
        "--token-file", type=Path, metavar="FILE", help="read the bearer token from FILE"
    )
    job = parser.add_argument_group("render job (Flamenco's jobs API)")
    job.add_argument(
        "--job-type",
        default=DEFAULT_JOB_TYPE,
        metavar="NAME",
        help=f"the Manager's job type (default: {DEFAULT_JOB_TYPE})",
    )
    job.add_argument("--job-name", metavar="NAME", help="default: the blend file's name")
    job.add_argument("--priority", type=int, default=50, help="job priority (default: 50)")
    job.add_argument("--worker-tag", metavar="TAG", help="only workers with this tag (name or ID)")
    job.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a job setting, typed by the job type (e.g. frames=1-10); repeatable. Unset "
        "settings come from the blend's scene where Blender would evaluate them, else the "
        "job type's default",
    )
    job.add_argument(
        "--no-job",
        action="store_true",
        help="only upload and check out; print the farm path last and create no job",
    )
    return parser


def _token(args: argparse.Namespace) -> str | None:
    """--token, else --token-file, else $FLAMENCO_SHAMAN_TOKEN, else none."""
    if args.token is not None:
        return args.token
    if args.token_file is not None:
        try:
            text = args.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as ex:
            reason = ex.strerror if isinstance(ex, OSError) and ex.strerror else ex
            raise SubmitError(f"cannot read the token file {args.token_file}: {reason}") from None
        if not text:
            raise SubmitError(f"the token file {args.token_file} is empty")
        return text
    return os.environ.get(TOKEN_ENV) or None


def _manager_url(text: str | None) -> str:
    """--manager, else $FLAMENCO_MANAGER_URL, as a full URL."""
    if text is None:
        text = os.environ.get(MANAGER_URL_ENV, "")
    text = text.strip()
    if not text:
        raise SubmitError("--manager is empty; give the manager's URL, e.g. http://farm:8080/")
    # "farm:8080" is what people type; the engine wants a full URL.
    return text if "://" in text else "http://" + text


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def job_for(args: argparse.Namespace, options: SubmitOptions) -> JobSpec:
    """The job's settings, worked out (and checked) before anything is uploaded."""
    with FlamencoAPI(options.manager_url, options.token) as api:
        api.version()  # first, so a server that is no Flamenco Manager is named as such
        return job_spec_for_blend(
            api,
            args.blendfile,
            job_type=args.job_type,
            name=args.job_name,
            priority=args.priority,
            worker_tag=args.worker_tag,
            assignments=args.settings,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="shaman-submit: %(message)s")
    # Missing assets are reported once, at the end; BAT would log each one as it goes.
    logging.getLogger("blender_asset_tracer").setLevel(logging.ERROR)
    if args.manager is None and not os.environ.get(MANAGER_URL_ENV, "").strip():
        parser.error(f"no manager: give --manager URL or set ${MANAGER_URL_ENV}")
    if args.no_job and (args.settings or args.job_name or args.worker_tag):
        parser.error("--no-job creates no job, so --set, --job-name and --worker-tag don't apply")
    try:
        options = SubmitOptions(
            blendfile=args.blendfile,
            manager_url=_manager_url(args.manager),
            project_root=args.project,
            checkout_path=args.checkout_path,
            relative_only=args.relative_only,
            exclude=tuple(args.exclude),
            hash_workers=args.jobs,
            uploads=args.uploads,
            token=_token(args),
        )
        if not args.no_job:
            check_local_inputs(options)  # a wrong path is said before the Manager is asked
            options = dataclasses.replace(options, job=job_for(args, options))
    except SubmitError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: cancelled", file=sys.stderr)
        return 130
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    submission = Submission(options, progress=bar)
    outcome: dict[str, object] = {}
    finished = threading.Event()

    def work() -> None:
        try:
            outcome["result"] = submission.run()
        except BaseException as ex:  # reported by the main thread
            outcome["error"] = ex
        finally:
            finished.set()

    # The engine runs in a thread so that Ctrl+C reaches us and becomes cancel(). We wait
    # on an Event, not Thread.join(): an interrupted join() can wrongly report the thread
    # as finished on Python < 3.13.
    threading.Thread(target=work, name="shaman-submit", daemon=True).start()
    try:
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:
        submission.cancel()
        try:
            finished.wait()
        except KeyboardInterrupt:  # a second Ctrl+C: stop waiting for a clean stop
            outcome["error"] = SubmitCancelled()
    if bar is not None:
        bar.clear()

    failure = outcome.get("error")
    if isinstance(failure, SubmitCancelled):
        print("shaman-submit: cancelled", file=sys.stderr)
        return 130
    if isinstance(failure, SubmitError):
        print(f"shaman-submit: error: {failure}", file=sys.stderr)
        return 1
    if failure is not None:
        print(f"shaman-submit: error: {type(failure).__name__}: {failure}", file=sys.stderr)
        return 1

    result = outcome["result"]
    assert isinstance(result, SubmitResult)
    report(result, excluding=bool(args.exclude))
    return 0


def report(result: SubmitResult, *, excluding: bool) -> None:
    """What was left out and sent; the farm path and job ID last, for scripts."""
    if excluding:
        count = len(result.excluded_files)
        print(f"Excluded {count} file{'' if count == 1 else 's'} matching --exclude")
    if result.missing_files:
        print(f"Missing assets ({len(result.missing_files)}):")
        for path in result.missing_files:
            print(f"  {path}")
    for warning in result.warnings:  # the manager's, e.g. names Windows workers can't hold
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    print(
        f"Uploaded {human_bytes(result.bytes_uploaded)} of {human_bytes(result.bytes_total)} "
        f"({result.files_uploaded} of {result.files_total} files; "
        f"{result.bytes_uploaded} of {result.bytes_total} bytes)"
    )
    print(f"Checkout: {result.checkout_path}")
    if result.job_id is not None:
        print(f"Job: {result.job_name} {result.job_url}")
    print(result.farm_blend_path)
    if result.job_id is not None:
        print(result.job_id)


if __name__ == "__main__":
    sys.exit(main())
