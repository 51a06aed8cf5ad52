"""User-facing errors of the lab.

Contract: a `LabError` carries a message meant for the person at the terminal (what is wrong and
what the valid choices are). `lab` prints it without a traceback and exits with status 2; library
callers (notebooks, tests) catch it like any other exception.
"""

from __future__ import annotations


class LabError(Exception):
    """A mistake in how the lab was asked to do something (bad profile, parameter, path)."""
