"""Submission engine: trace -> hash -> negotiate -> upload -> checkout. Never imports bpy.

Public API (used by the Blender UI and by `shaman-submit`)::

    sub = Submission(SubmitOptions(blendfile, manager_url), progress=callback)
    result = sub.run()      # SubmitResult; raises SubmitError / SubmitCancelled
    sub.cancel()            # from any thread
"""

from .cache import ChecksumCache
from .client import ManagerClient
from .errors import SubmitCancelled, SubmitError
from .options import SubmitOptions, SubmitResult
from .progress import Progress
from .submission import Submission

__all__ = [
    "ChecksumCache",
    "ManagerClient",
    "Progress",
    "Submission",
    "SubmitCancelled",
    "SubmitError",
    "SubmitOptions",
    "SubmitResult",
]
