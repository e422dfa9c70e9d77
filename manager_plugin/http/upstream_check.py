"""At gateway startup: does the upstream Manager's `{jobs}` agree with our storage?

Submissions render from `{jobs}/<checkout>`, which the Manager resolves to its own jobs
directory; it must be the directory our checkouts are made in, and the Manager's Shaman
must be on (or it resolves `{jobs}` to the storage root and keeps deleted jobs' files).
The config file can't tell us what the running Manager uses, so we ask it once,
without holding up startup: a Manager that isn't up yet is only logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)

CONFIGURATION = "/api/v3/configuration"


def storage_problem(answer: object, jobs_dir: Path) -> str | None:
    """What is wrong with the Manager's `configuration` answer, or None."""
    if not isinstance(answer, dict):
        return f"its {CONFIGURATION} is not a JSON object"
    if answer.get("shamanEnabled") is not True:
        return (
            "its Shaman is off (shaman.enabled: false), so {jobs} is not our jobs directory "
            "and deleted jobs keep their checkouts; set shaman.enabled: true there"
        )
    location = answer.get("storageLocation")
    if not isinstance(location, str) or os.path.normpath(location) != str(jobs_dir):
        return (
            f"its jobs directory is {location!r}, ours is {str(jobs_dir)!r}: submissions would "
            "point workers at files that are not there; give both the same shared_storage_path"
        )
    return None


async def check_upstream_storage(
    session: aiohttp.ClientSession, upstream: str, jobs_dir: Path
) -> None:
    """Log (warning) when the upstream Manager's storage disagrees with ours."""
    try:
        async with session.get(upstream + CONFIGURATION) as response:
            if response.status != 200:
                log.warning(
                    "gateway: upstream %s answered %d to %s; cannot check its storage",
                    upstream,
                    response.status,
                    CONFIGURATION,
                )
                return
            answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("gateway: upstream %s not checked yet (%s); forwarding anyway", upstream, exc)
        return
    problem = storage_problem(answer, jobs_dir)
    if problem is not None:
        log.error("gateway: upstream Flamenco Manager %s: %s", upstream, problem)
    else:
        log.info(
            "gateway: upstream %s renders from %s, where our checkouts are", upstream, jobs_dir
        )
