"""The file store: blobs identified by (SHA-256, size), received by streaming.

`FileStore` (in `facade`) is the one entry point; the modules beside it each own one
part: `layout` (paths, "stored"), `temps` (uploads in flight, "stale"), `commit` (the
one way a blob appears), `pending` (small uploads not synced yet, until a checkout),
`receive`, `sinks` and `splice` (uploads), `batch` (groups of small records),
`batch_receive` (a batch upload's body), `system` (Linux or portable).
"""

from .facade import FileStore
from .pending import Presence
from .receive import SMALL_BODY, IncomingSmall, Received
from .sinks import Reader
from .splice import SocketSource
from .temps import STALE_TEMP_AGE, is_disk_full

__all__ = [
    "SMALL_BODY",
    "STALE_TEMP_AGE",
    "FileStore",
    "IncomingSmall",
    "Presence",
    "Reader",
    "Received",
    "SocketSource",
    "is_disk_full",
]
