"""Submission engine: trace -> hash -> negotiate -> upload -> checkout -> job. Never
imports bpy.

Public API (used by the Blender UI and by `shaman-submit`)::

    sub = Submission(SubmitOptions(blendfile, manager_url, job=spec), progress=callback)
    result = sub.run()      # SubmitResult; raises SubmitError / SubmitCancelled
    sub.cancel()            # from any thread

`spec` is the render job to create after the checkout (a `flamenco.JobSpec`; the result
then has its job_id and job_url); `job=None` uploads and checks out only. Job types,
settings and the jobs API live in `.flamenco`.
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
