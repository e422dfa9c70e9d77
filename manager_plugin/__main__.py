"""`python -m manager_plugin` is the same as the `shaman-manager` command."""

from .cli import main

raise SystemExit(main())
