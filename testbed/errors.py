"""The testbed's exception hierarchy; the CLI maps each class to one exit code.

Library code raises these; only ``testbed.cli`` turns them into exit codes.
"""

from __future__ import annotations


class TestbedError(Exception):
    """Base class of every error the testbed raises on purpose."""

    exit_code = 1
    __test__ = False  # not a pytest test class despite the name


class ConfigError(TestbedError):
    """A topology or experiment file is invalid (exit 2)."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None,
                 fix: str | None = None) -> None:
        self.file = file
        self.path = path
        self.fix = fix
        where = ""
        if file or path:
            where = f"{file or '<input>'}" + (f", at '{path}'" if path else "") + ": "
        text = where + message
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)


class PrivilegeError(TestbedError):
    """A backend needs root, namespaces or cgroups that this host does not give (exit 3)."""

    exit_code = 3


class ResourceError(TestbedError):
    """The topology does not fit the Ray cluster or the host (exit 4)."""

    exit_code = 4


class EmulationError(TestbedError):
    """Setting up or tearing down kernel objects or actors failed (exit 5)."""

    exit_code = 5


class WorkloadError(TestbedError):
    """User or model code failed inside a workload (exit 6)."""

    exit_code = 6
