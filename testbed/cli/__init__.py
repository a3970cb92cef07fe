"""The ``testbed`` command line (the only place that exits)."""
