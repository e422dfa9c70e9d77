"""`python -m bench`: run the benchmark suite."""

from .cli import main

raise SystemExit(main())
