"""The ``dsrecon`` command line (see :mod:`dsrecon.cli.main`)."""
