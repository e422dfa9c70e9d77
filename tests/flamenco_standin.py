"""A stand-in Flamenco Manager 3.9 for tests: the jobs API plus Shaman with the Go server's quirks.

Usage (fixtures are registered in tests/conftest.py):

    def test_x(flamenco):                    # Shaman on, storage in a tmp dir
        flamenco.url                         # "http://127.0.0.1:PORT/" (base URL, trailing slash)
        flamenco.storage, flamenco.jobs      # storage dir and its jobs/ dir
        flamenco.received_jobs  # exact JSON of each POST /api/v3/jobs (+ .received_checks)
    flamenco_factory(shaman_enabled=False) / .refuse("msg") / .go_away_after_checkout() / .stop()

Flamenco facts modelled here (from its OpenAPI document, Go handlers and job-type scripts, and
checked against a Flamenco 3.9 Manager built from source and run on loopback):
- `GET /api/v3/version` {version, shortversion, name, git}; `GET /api/v3/configuration`
  {storageLocation, shamanEnabled, isFirstRun}, storageLocation being `<storage>/jobs` when Shaman
  is on; `GET /api/v3/configuration/shared-storage/{audience}/{platform}` {location, audience,
  platform, shamanEnabled} (the audience is not validated).
- `GET /api/v3/jobs/types` {"job_types": [...]} sorted by name, `GET /api/v3/jobs/type/{name}`
  (404 "no such job type known"); each type has an `etag`, a SHA-1 of its definition, which
  changes when the definition does. `simple-blender-render` and `echo-sleep-test` carry
  Flamenco's settings (keys, types, subtypes, `eval` expressions, `evalInfo`, visibility,
  required, defaults, propargs); `settings-test` is ours (one setting of each kind).
- `POST /api/v3/jobs/check` and `POST /api/v3/jobs` compile the job: a body that isn't a
  SubmittedJob 400 `{"message": "request body has an error: ..."}` (the validator's, no "code");
  unknown type 400 "job type unknown"; a non-empty, stale `type_etag` 412; the compiler's refusal
  400 with its message (simple-blender-render refuses video formats FFMPEG/AVI_RAW/AVI_JPEG with
  Goja's "at compileJob (...)" suffix, and a missing render_output_path). Check answers 204;
  submit 200 with the Job as Go stores it (no type_etag, empty submitter_platform, settings as
  compiled: `{timestamp}` in render_output_path filled in); an unknown worker_tag ID is 500
  "error persisting job in database".
- `GET/DELETE /api/v3/jobs/{id}` (400 "job ID not valid" for a non-UUID, 404 "no such job");
  deletion removes `jobs/<storage.shaman_checkout_id>` and its parent when empty, only when
  Shaman is on.
- `GET /api/v3/worker-mgt/tags` {"tags": [{id, name, description}]}.
- Shaman under /api/v3/shaman, served by forwarding to this project's own server, answered as Go
  does: a stored upload is 200 with an empty body (not 204); every checkout error is 500
  "unexpected error: ..." (missing files: "unexpected error: unknown files requested in
  checkout"); X-Shaman-Original-Filename is RFC 2047-decoded like Go's mime.WordDecoder
  (malformed words kept as they are, 400 for a charset it cannot decode); no batch-upload
  extension (404, echo's JSON `{"message": "Not Found"}`); 503 "shaman server not active" when
  Shaman is off. Idle keep-alive connections are closed after 1 s: a harsher condition than the
  3.9 Manager built here (it kept an idle connection open for over 30 s), kept so the client's
  reconnecting is exercised.

Extending: a route set is a function `setup(app, standin)`; append it to ROUTE_SETS (or pass
`extra_routes=[...]` to the factory). Unrouted paths answer echo's 404 through a middleware, so a
catch-all route added by a route set takes precedence.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from manager_plugin.config import Config
from manager_plugin.http.server import BackgroundServer

API = "/api/v3"
SHORT_VERSION = "3.9"
KEEPALIVE_IDLE_SECONDS = 1.0
VIDEO_FORMATS = ("FFMPEG", "AVI_RAW", "AVI_JPEG")

# Flamenco's simple-blender-render settings, as the Manager lists them (facts, our own wording).
SIMPLE_BLENDER_RENDER: dict[str, Any] = {
    "name": "simple-blender-render",
    "label": "Simple Blender Render",
    "description": "Render a sequence of frames, and create a preview video file",
    "settings": [
        {
            "key": "frames",
            "type": "string",
            "required": True,
            "eval": "f'{C.scene.frame_start}-{C.scene.frame_end}'",
            "evalInfo": {"showLinkButton": True, "description": "Scene frame range"},
            "description": "Frame range to render. Examples: '47', '1-30', '3, 5-10, 47-327'",
        },
        {
            "key": "chunk_size",
            "type": "int32",
            "default": 1,
            "description": "Number of frames to render in one Blender render task",
            "visible": "submission",
        },
        {
            "key": "render_output_root",
            "type": "string",
            "subtype": "dir_path",
            "required": True,
            "visible": "submission",
            "description": "Base directory of where render output is stored.",
        },
        {
            "key": "add_path_components",
            "type": "int32",
            "required": True,
            "default": 0,
            "propargs": {"min": 0, "max": 32},
            "visible": "submission",
            "description": "Number of path components of the blend file to use in the output path",
        },
        {
            "key": "render_output_path",
            "type": "string",
            "subtype": "file_path",
            "editable": False,
            "eval": "str(Path(abspath(settings.render_output_root), "
            "last_n_dir_parts(settings.add_path_components), jobname, '{timestamp}', '######'))",
            "description": "Final file path of where render output will be saved",
        },
        {
            "key": "blendfile",
            "type": "string",
            "required": True,
            "description": "Path of the Blend file to render",
            "visible": "web",
        },
        {
            "key": "fps",
            "type": "float",
            "eval": "C.scene.render.fps / C.scene.render.fps_base",
            "visible": "hidden",
        },
        {
            "key": "format",
            "type": "string",
            "required": True,
            "eval": "C.scene.render.image_settings.file_format",
            "visible": "web",
        },
        {
            "key": "image_file_extension",
            "type": "string",
            "required": True,
            "eval": "C.scene.render.file_extension",
            "visible": "hidden",
            "description": "File extension used when rendering images",
        },
        {
            "key": "has_previews",
            "type": "bool",
            "required": False,
            "eval": "C.scene.render.image_settings.use_preview",
            "visible": "hidden",
            "description": "Whether Blender will render preview images.",
        },
        {
            "key": "scene",
            "type": "string",
            "required": True,
            "eval": "C.scene.name",
            "visible": "web",
            "description": "Name of the scene to render.",
        },
    ],
}

# Flamenco's own test job type (no blendfile setting).
ECHO_SLEEP_TEST: dict[str, Any] = {
    "name": "echo-sleep-test",
    "label": "Echo Sleep Test",
    "settings": [
        {"key": "message", "type": "string", "required": True},
        {"key": "sleep_duration_seconds", "type": "int32", "default": 1},
        {"key": "sleep_repeats", "type": "int32", "default": 1},
    ],
}

# Not Flamenco's: one setting of each kind a UI must draw (choices, bool, float, a default,
# a visible expression with its toggle, propargs).
SETTINGS_TEST: dict[str, Any] = {
    "name": "settings-test",
    "label": "Settings Test",
    "description": "A stand-in job type with one setting of each kind",
    "settings": [
        {"key": "message", "type": "string", "required": True, "default": "hello"},
        {"key": "mode", "type": "string", "choices": ["echo", "sleep", "both"], "default": "both"},
        {"key": "loud", "type": "bool", "default": False, "visible": "submission"},
        {"key": "scale", "type": "float", "default": 1.5, "propargs": {"min": 0.0, "max": 10.0}},
        {
            "key": "frames",
            "type": "string",
            "eval": "f'{C.scene.frame_start}-{C.scene.frame_end}'",
            "evalInfo": {"showLinkButton": True, "description": "Scene frame range"},
        },
        {"key": "blendfile", "type": "string", "required": True, "visible": "web"},
    ],
}

DEFAULT_JOB_TYPES = (SIMPLE_BLENDER_RENDER, ECHO_SLEEP_TEST, SETTINGS_TEST)


def job_type_etag(definition: dict[str, Any]) -> str:
    body = {k: v for k, v in definition.items() if k != "etag"}
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()  # Go: 40 hex


def with_etag(definition: dict[str, Any]) -> dict[str, Any]:
    return {**definition, "etag": job_type_etag(definition)}


class JobCompileError(Exception):
    """The job compiler refused the job (Flamenco: 400 with this message)."""


class JobTypeUnknown(JobCompileError):
    def __init__(self) -> None:
        super().__init__("job type unknown")


class JobTypeBadEtag(Exception):
    pass


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status)


def _go_quote(text: str) -> str:
    """Go's %q of a header value, near enough for messages."""
    return json.dumps(text, ensure_ascii=False)


# --- RFC 2047, the way Go's mime.WordDecoder.DecodeHeader treats it -------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([^?\s]+)\?([^?\s]*)\?=")
_KNOWN_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "latin-1", "us-ascii": "ascii"}


class HeaderDecodeError(ValueError):
    """Go answers 400: a charset it cannot decode."""


class _MalformedWord(ValueError):
    """Bad base64 or Q text: Go keeps such a word as it is."""


def decode_rfc2047(value: str) -> str:
    """Decode encoded-words; malformed ones stay as they are, an unknown charset raises."""
    out: list[str] = []
    pos = 0
    previous_was_word = False
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        charset, encoding, text = match.groups()
        if encoding not in ("b", "B", "q", "Q"):
            out.append(value[pos : match.end()])
            pos = match.end()
            previous_was_word = False
            continue
        try:
            decoded = _decode_word(charset, encoding, text)
        except _MalformedWord:
            out.append(value[pos : match.end()])
            pos = match.end()
            previous_was_word = False
            continue
        if not (previous_was_word and between.strip(" \t") == ""):
            out.append(between)
        out.append(decoded)
        pos = match.end()
        previous_was_word = True
    out.append(value[pos:])
    return "".join(out)


def _decode_word(charset: str, encoding: str, text: str) -> str:
    codec = _KNOWN_CHARSETS.get(charset.lower())
    if codec is None:
        raise HeaderDecodeError(f"mime: unhandled charset {charset!r}")
    if encoding in "bB":
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _MalformedWord(str(exc)) from exc
    else:
        raw = _decode_q(text)
    return raw.decode(codec, errors="replace")


def _decode_q(text: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char == "_":
            out.append(0x20)
        elif char == "=":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in "0123456789abcdefABCDEF" for c in pair):
                raise _MalformedWord(text)
            out.append(int(pair, 16))
            i += 2
        elif 32 <= ord(char) <= 126:
            out.append(ord(char))
        else:
            raise _MalformedWord(text)
        i += 1
    return bytes(out)


# --- job compilation (what the Manager's job-type scripts refuse) ---------------------------

_FRAME_CHUNK = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


def count_frames(frames: str) -> int:
    total = 0
    for part in str(frames).split(","):
        match = _FRAME_CHUNK.match(part)
        if match is None:
            raise JobCompileError(f"invalid frame range: {frames!r}")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if end < start:
            raise JobCompileError(f"invalid frame range: {frames!r}")
        total += end - start + 1
    return total


def compile_simple_blender_render(settings: dict[str, Any], created: datetime) -> int:
    """Refuse what Flamenco's script refuses; fill in {timestamp}; return the task count."""
    fmt = settings.get("format")
    if fmt in VIDEO_FORMATS:
        # Goja appends where in the script the exception was thrown.
        raise JobCompileError(
            f'This job type only renders images, and not "{fmt}" at compileJob '
            "(simple_blender_render.js:70:9(27))"
        )
    output = settings.get("render_output_path")
    if not output:
        raise JobCompileError("no render_output_path setting!")
    stamp = created.astimezone().strftime("%Y-%m-%d_%H%M%S")
    settings["render_output_path"] = str(output).replace("{timestamp}", stamp)
    frames = count_frames(settings.get("frames", ""))
    chunk = settings.get("chunk_size") or 1
    if not isinstance(chunk, int) or chunk < 1:
        raise JobCompileError(f"invalid chunk_size: {chunk!r}")
    return -(-frames // chunk) + 1  # render tasks plus the preview video


def compile_generic(settings: dict[str, Any], created: datetime) -> int:
    return 1


COMPILERS: dict[str, Callable[[dict[str, Any], datetime], int]] = {
    "simple-blender-render": compile_simple_blender_render,
}

_SUBMITTED_JOB_REQUIRED = {"name": str, "type": str, "priority": int, "submitter_platform": str}


class InvalidRequestBody(Exception):
    """Flamenco's OpenAPI request validator refused the body: 400 {"message"} (no "code")."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"request body has an error: {problem}")


def validate_submitted_job(body: Any) -> dict[str, Any]:
    """The request validator's job: a SubmittedJob object with its required fields typed."""
    schema = "doesn't match schema #/components/schemas/SubmittedJob"
    if not isinstance(body, dict):
        raise InvalidRequestBody(f"{schema}: value must be an object")
    for key, kind in _SUBMITTED_JOB_REQUIRED.items():
        value = body.get(key)
        if value is None:
            raise InvalidRequestBody(f'{schema}: Error at "/{key}": property "{key}" is missing')
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidRequestBody(f'{schema}: Error at "/{key}": value has a wrong type')
    for key in ("settings", "metadata", "storage"):
        if key in body and not isinstance(body[key], dict):
            raise InvalidRequestBody(f'{schema}: Error at "/{key}": value must be an object')
    return body


# --- the running stand-in -------------------------------------------------------------------


@dataclass
class StandinState:
    """Everything a test may look at or change while the stand-in runs."""

    storage: Path
    shaman_enabled: bool = True
    name: str = "Stand-in Flamenco Manager"
    job_types: dict[str, dict[str, Any]] = field(default_factory=dict)
    worker_tags: list[dict[str, str]] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> Job as answered
    received_jobs: list[dict[str, Any]] = field(default_factory=list)  # exact POST /jobs bodies
    received_checks: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    original_filenames: list[tuple[str, str]] = field(default_factory=list)  # (raw, decoded)
    refusal: str | None = None  # when set, jobs/check and jobs answer 400 with it
    change_after_listing: set[str] = field(default_factory=set)
    gone_after_checkout: bool = False
    gone: bool = False

    @property
    def jobs_dir(self) -> Path:
        return self.storage / "jobs"

    @property
    def effective_storage(self) -> Path:
        return self.jobs_dir if self.shaman_enabled else self.storage


RouteSet = Callable[[web.Application, "FlamencoStandin"], None]


class FlamencoStandin:
    """The stand-in on its own event loop in a daemon thread, Shaman forwarded to our server."""

    def __init__(
        self,
        storage: Path,
        *,
        shaman_enabled: bool = True,
        job_types: tuple[dict[str, Any], ...] = DEFAULT_JOB_TYPES,
        extra_routes: tuple[RouteSet, ...] = (),
        **shaman_overrides: Any,
    ) -> None:
        self.state = StandinState(storage=Path(storage).absolute(), shaman_enabled=shaman_enabled)
        for definition in job_types:
            self.set_job_type(definition)
        self.state.worker_tags.append(
            {"id": str(uuid.uuid4()), "name": "GPU", "description": "Workers with a GPU"}
        )
        settings: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "storage_path": self.state.storage,
            "shaman_enabled": True,
            "gc_period": 0,
        }
        settings.update(shaman_overrides)
        self.shaman = BackgroundServer(Config(**settings))
        self.extra_routes = extra_routes
        self.url = ""
        self.session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._site: web.TCPSite | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flamenco-standin", daemon=True)

    # -- what tests use --

    @property
    def storage(self) -> Path:
        return self.state.storage

    @property
    def jobs(self) -> Path:
        return self.state.jobs_dir

    @property
    def received_jobs(self) -> list[dict[str, Any]]:
        return self.state.received_jobs

    @property
    def received_checks(self) -> list[dict[str, Any]]:
        return self.state.received_checks

    def api(self, path: str) -> str:
        return self.url + path.lstrip("/")

    def set_job_type(self, definition: dict[str, Any]) -> None:
        """Add or change a job type (its etag follows), as editing a job-type script does."""
        self.state.job_types[definition["name"]] = with_etag(definition)

    def change_job_type_after_listing(self, name: str) -> None:
        """Right after the next job type listing, edit type `name` (its etag changes), as
        when someone edits a job-type script while an artist submits."""
        self.state.change_after_listing.add(name)

    def refuse(self, message: str | None) -> None:
        """Make jobs/check and jobs answer 400 with `message` (None: stop refusing)."""
        self.state.refusal = message

    def go_away_after_checkout(self) -> None:
        """After the next good checkout the Manager vanishes (connections drop, port closes)."""
        self.state.gone_after_checkout = True

    def shaman_requests(self) -> list[tuple[str, str]]:
        return [r for r in self.state.requests if r[1].startswith(f"{API}/shaman/")]

    def lose_files(self) -> None:
        """Forget every blob and checkout, as a Manager whose storage was wiped."""
        for sub in ("file-store", "jobs"):
            shutil.rmtree(self.storage / sub, ignore_errors=True)
        self.shaman.service.prepare_storage()

    def start(self) -> str:
        self.shaman.start()
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self.shaman.stop()
            raise self._error
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        self.shaman.stop()

    # -- the server thread --

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.session = aiohttp.ClientSession(auto_decompress=False)
            app = self.create_app()
            runner = web.AppRunner(
                app, access_log=None, keepalive_timeout=KEEPALIVE_IDLE_SECONDS, shutdown_timeout=2
            )
            await runner.setup()
            self._site = web.TCPSite(runner, "127.0.0.1", 0)
            await self._site.start()
            port = runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}/"
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await self.session.close()

    def create_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._vanish_middleware, _echo_errors_middleware],
            client_max_size=64 * 1024 * 1024,
        )
        for setup in (*ROUTE_SETS, *self.extra_routes):
            setup(app, self)
        return app

    @web.middleware
    async def _vanish_middleware(
        self, request: web.Request, handler: web.RequestHandler
    ) -> web.StreamResponse:
        self.state.requests.append((request.method, request.path))
        if self.state.gone:
            _drop_connection(request)
            raise ConnectionResetError("the stand-in Manager is gone")
        return await handler(request)

    async def vanish(self) -> None:
        """Stop answering: every later request's connection drops, the port stops listening."""
        self.state.gone = True
        if self._site is not None:
            await self._site.stop()


def _drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


@web.middleware
async def _echo_errors_middleware(
    request: web.Request, handler: web.RequestHandler
) -> web.StreamResponse:
    """Unrouted paths and methods answer as Go's echo does: JSON {"message": ...}."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.json_response({"message": "Not Found"}, status=404)
    except web.HTTPMethodNotAllowed:
        return web.json_response({"message": "Method Not Allowed"}, status=405)


# --- route sets ------------------------------------------------------------------------------


def setup_meta_routes(app: web.Application, standin: FlamencoStandin) -> None:
    state = standin.state

    async def version(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "version": SHORT_VERSION,
                "shortversion": SHORT_VERSION,
                "name": state.name,
                "git": "v3.9-standin",
            }
        )

    async def configuration(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "storageLocation": str(state.effective_storage),
                "shamanEnabled": state.shaman_enabled,
                "isFirstRun": False,
            }
        )

    async def shared_storage(request: web.Request) -> web.Response:
        audience = request.match_info["audience"]  # Go does not validate it
        return web.json_response(
            {
                "location": str(state.effective_storage),
                "audience": audience,
                "platform": request.match_info["platform"],
                "shamanEnabled": state.shaman_enabled,
            }
        )

    async def worker_tags(request: web.Request) -> web.Response:
        return web.json_response({"tags": state.worker_tags})

    app.router.add_get(f"{API}/version", version)
    app.router.add_get(f"{API}/configuration", configuration)
    app.router.add_get(
        f"{API}/configuration/shared-storage/{{audience}}/{{platform}}", shared_storage
    )
    app.router.add_get(f"{API}/worker-mgt/tags", worker_tags)


def setup_job_routes(app: web.Application, standin: FlamencoStandin) -> None:
    state = standin.state

    async def job_types(request: web.Request) -> web.Response:
        listed = [state.job_types[name] for name in sorted(state.job_types)]
        answer = web.json_response({"job_types": listed})
        for name in list(state.change_after_listing):
            state.change_after_listing.discard(name)
            edited = dict(state.job_types[name])
            edited["description"] = f"{edited.get('description', '')} (edited)".strip()
            standin.set_job_type(edited)
        return answer

    async def job_type(request: web.Request) -> web.Response:
        definition = state.job_types.get(request.match_info["name"])
        if definition is None:
            return _error(404, "no such job type known")
        return web.json_response(definition)

    async def read_job(request: web.Request, log: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequestBody(f"failed to decode request body: {exc}") from exc
        log.append(body)
        return validate_submitted_job(body)

    def compile_job(body: dict[str, Any], created: datetime) -> tuple[dict[str, Any], int]:
        definition = state.job_types.get(body["type"])
        if definition is None:
            raise JobTypeUnknown()
        etag = body.get("type_etag")
        if etag and etag != definition["etag"]:
            raise JobTypeBadEtag()
        if state.refusal is not None:
            raise JobCompileError(state.refusal)
        settings = dict(body.get("settings") or {})
        compiler = COMPILERS.get(body["type"], compile_generic)
        return settings, compiler(settings, created)

    def compile_answer(exc: Exception) -> web.Response:
        if isinstance(exc, InvalidRequestBody):
            return web.json_response({"message": str(exc)}, status=400)
        if isinstance(exc, JobTypeBadEtag):
            return _error(
                412, "rejecting job because its settings are outdated, refresh the job type"
            )
        return _error(400, str(exc))

    async def check(request: web.Request) -> web.Response:
        try:
            body = await read_job(request, state.received_checks)
            compile_job(body, datetime.now(UTC))
        except (JobCompileError, JobTypeBadEtag, InvalidRequestBody) as exc:
            return compile_answer(exc)
        return web.Response(status=204)

    async def submit(request: web.Request) -> web.Response:
        created = datetime.now(UTC)
        try:
            body = await read_job(request, state.received_jobs)
            settings, _tasks = compile_job(body, created)
        except (JobCompileError, JobTypeBadEtag, InvalidRequestBody) as exc:
            return compile_answer(exc)
        tag = body.get("worker_tag")
        if tag and tag not in {t["id"] for t in state.worker_tags}:
            return _error(500, "error persisting job in database")  # what Go answers
        stamp = created.isoformat().replace("+00:00", "Z")
        # As Go answers it: no type_etag, an empty submitter_platform (neither is stored).
        job = {
            "metadata": dict(body.get("metadata") or {}),
            "name": body["name"],
            "priority": body["priority"],
            "settings": settings,
            **({"storage": body["storage"]} if body.get("storage") else {}),
            **({"worker_tag": tag} if tag else {}),
            "submitter_platform": "",
            "type": body["type"],
            "id": str(uuid.uuid4()),
            "created": stamp,
            "updated": stamp,
            "status": body.get("initial_status") or "queued",
            "activity": "",
            "steps_completed": 0,
            "steps_total": 0,  # counted by the Manager later
        }
        state.jobs[job["id"]] = job
        return web.json_response(job)

    def find_job(request: web.Request) -> dict[str, Any] | web.Response:
        job_id = request.match_info["job_id"]
        try:
            uuid.UUID(job_id)
        except ValueError:
            return _error(400, "job ID not valid")
        job = state.jobs.get(job_id)
        return job if job is not None else _error(404, "no such job")

    async def fetch_job(request: web.Request) -> web.Response:
        found = find_job(request)
        return found if isinstance(found, web.Response) else web.json_response(found)

    async def delete_job(request: web.Request) -> web.Response:
        found = find_job(request)
        if isinstance(found, web.Response):
            return found
        del state.jobs[found["id"]]
        checkout_id = (found.get("storage") or {}).get("shaman_checkout_id")
        if state.shaman_enabled and checkout_id:
            remove_checkout(state.jobs_dir, checkout_id)
        return web.Response(status=204)

    app.router.add_get(f"{API}/jobs/types", job_types)
    app.router.add_get(f"{API}/jobs/type/{{name}}", job_type)
    app.router.add_post(f"{API}/jobs/check", check)
    app.router.add_post(f"{API}/jobs", submit)
    app.router.add_get(f"{API}/jobs/{{job_id}}", fetch_job)
    app.router.add_delete(f"{API}/jobs/{{job_id}}", delete_job)


def remove_checkout(jobs_dir: Path, checkout_id: str) -> None:
    """Remove jobs/<checkout_id> and its parent if that is then empty; never outside jobs/."""
    root = jobs_dir.resolve()
    target = (jobs_dir / checkout_id).resolve()
    if root not in target.parents:
        return
    shutil.rmtree(target, ignore_errors=True)
    parent = target.parent
    if parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def setup_shaman_routes(app: web.Application, standin: FlamencoStandin) -> None:
    """Shaman, forwarded to our server and answered with the Go server's status codes."""
    state = standin.state

    def backend(request: web.Request) -> str:
        return standin.shaman.url.rstrip("/") + request.path

    def forward_headers(request: web.Request) -> dict[str, str]:
        keep = ("Content-Type", "Content-Length", "X-Shaman-Can-Defer-Upload", "Authorization")
        return {k: request.headers[k] for k in keep if k in request.headers}

    def inactive() -> web.Response | None:
        return None if state.shaman_enabled else _error(503, "shaman server not active")

    async def upload(request: web.Request) -> web.StreamResponse:
        if (answer := inactive()) is not None:
            return answer
        raw = request.headers.get("X-Shaman-Original-Filename")
        if raw is not None:
            try:
                state.original_filenames.append((raw, decode_rfc2047(raw)))
            except HeaderDecodeError:
                return _error(400, f"invalid X-Shaman-Original-Filename header: {_go_quote(raw)}")
        assert standin.session is not None
        try:
            async with standin.session.post(
                backend(request), data=request.content, headers=forward_headers(request)
            ) as answer:
                status = answer.status
                text = await answer.text()
        except aiohttp.ClientError:
            # Our server closed mid-upload (another client finished this file): so does Go.
            _drop_connection(request)
            raise
        if 200 <= status < 300 and status != 208:
            return web.Response(status=200)  # Go writes nothing: 200, empty body
        if status in (208, 425):
            return web.Response(status=status)
        if status in (400, 417):
            return _error(status, _message(text))
        return _error(500, f"unexpected error: {_message(text)}")

    async def file_status(request: web.Request) -> web.Response:
        if (answer := inactive()) is not None:
            return answer
        assert standin.session is not None
        async with standin.session.get(backend(request)) as answer:
            return web.Response(
                status=answer.status, body=await answer.read(), content_type="application/json"
            )

    async def requirements(request: web.Request) -> web.Response:
        if (answer := inactive()) is not None:
            return answer
        assert standin.session is not None
        async with standin.session.post(
            backend(request), data=await request.read(), headers=forward_headers(request)
        ) as answer:
            body = await answer.read()
            if answer.status == 200:
                return web.Response(status=200, body=body, content_type="application/json")
            if answer.status == 400:
                return _error(400, "invalid format")
            return _error(500, f"unexpected error: {_message(body.decode(errors='replace'))}")

    async def checkout(request: web.Request) -> web.Response:
        if (answer := inactive()) is not None:
            return answer
        assert standin.session is not None
        async with standin.session.post(
            backend(request), data=await request.read(), headers=forward_headers(request)
        ) as answer:
            body = await answer.read()
            status = answer.status
        if status == 200:
            response = web.Response(status=200, body=body, content_type="application/json")
            if state.gone_after_checkout:
                # The answer is on its way before the Manager vanishes, not lost with it.
                await response.prepare(request)
                await response.write_eof()
                asyncio.ensure_future(standin.vanish())
            return response
        if status == 424:
            return _error(500, "unexpected error: unknown files requested in checkout")
        if status == 400 and not _is_json_object(body):
            return _error(400, "invalid format")
        return _error(500, f"unexpected error: {_message(body.decode(errors='replace'))}")

    app.router.add_post(f"{API}/shaman/checkout/requirements", requirements)
    app.router.add_post(f"{API}/shaman/checkout/create", checkout)
    app.router.add_get(f"{API}/shaman/files/{{checksum}}/{{filesize}}", file_status)
    app.router.add_post(f"{API}/shaman/files/{{checksum}}/{{filesize}}", upload)


def _message(text: str) -> str:
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return text.strip()


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


ROUTE_SETS: list[RouteSet] = [setup_meta_routes, setup_job_routes, setup_shaman_routes]


# --- pytest fixtures (imported by tests/conftest.py) ----------------------------------------

StandinFactory = Callable[..., FlamencoStandin]


@pytest.fixture
def flamenco_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinFactory]:
    """`flamenco_factory(shaman_enabled=..., job_types=..., extra_routes=..., **shaman_config)`."""
    running: list[FlamencoStandin] = []

    def start(**options: Any) -> FlamencoStandin:
        standin = FlamencoStandin(tmp_path_factory.mktemp("flamenco-storage"), **options)
        standin.start()
        running.append(standin)
        return standin

    yield start
    for standin in running:
        standin.stop()


@pytest.fixture
def flamenco(flamenco_factory: StandinFactory) -> FlamencoStandin:
    """A running stand-in Manager with Shaman on."""
    return flamenco_factory()
