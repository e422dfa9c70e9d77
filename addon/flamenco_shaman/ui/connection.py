""" "Check connection": one line saying which manager answers, or why none does. No bpy."""

from __future__ import annotations

from ..engine import ManagerClient, SubmitError


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
