"""One submission in its own process, so its peak memory can be measured on its own.

Usage: python -m bench.submit_client BLEND MANAGER_URL CHECKOUT_PATH
Prints one JSON line: the SubmitResult's counters and this process's peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from . import targets


def main() -> int:
    blend, url, checkout = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    result = targets.submit(blend, url, checkout)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "files_uploaded": result.files_uploaded,
                "bytes_uploaded": result.bytes_uploaded,
                "peak_rss": peak,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
