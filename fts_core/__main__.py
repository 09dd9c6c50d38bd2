"""``python -m fts_core``: see :mod:`fts_core.cli`."""
from fts_core.cli import main

raise SystemExit(main())
