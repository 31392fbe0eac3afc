"""``python -m dsrecon`` is the ``dsrecon`` command."""

from dsrecon.cli.main import main

raise SystemExit(main())
