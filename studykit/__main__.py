"""Allow ``python -m studykit``."""

from studykit.cli import main

raise SystemExit(main())
