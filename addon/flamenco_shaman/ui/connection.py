"""Which Manager the add-on talks to, and "Check connection": one line saying which manager
answers, or why none does. No bpy."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..engine import ManagerClient, SubmitError

URL_ENV = "FLAMENCO_MANAGER_URL"
TOKEN_ENV = "FLAMENCO_SHAMAN_TOKEN"


def manager_address(
    pref_url: str,
    pref_url_set: bool,
    pref_token: str,
    environ: Mapping[str, str] = os.environ,
) -> tuple[str, str | None]:
    """(url, token): the preferences' own values first, else the environment's.

    A pipeline script runs Blender without the artist's preferences; the environment
    then names the Manager. A URL the artist set in the preferences always wins, but the
    built-in default does not count as set.
    """
    url = pref_url.strip() if pref_url_set else ""
    url = url or environ.get(URL_ENV, "").strip() or pref_url.strip()
    token = pref_token or environ.get(TOKEN_ENV, "")
    return url, token or None


def describe_manager(url: str, token: str | None = None) -> tuple[bool, str]:
    """(ok, message) for the manager at `url`; message is fit for the status bar."""
    try:
        with ManagerClient(url, token=token or None) as client:
            version = client.version()
            config = client.configuration()
    except SubmitError as ex:
        # The engine's messages already name the URL and the reason.
        message = str(ex)
        return False, message[:1].upper() + message[1:]
    name = version.get("name", "Flamenco Manager")
    shaman = "Shaman enabled" if config.get("shamanEnabled") else "Shaman is disabled"
    return bool(config.get("shamanEnabled")), f"{name} {version.get('version', '?')}: {shaman}"
