"""What can end a launch other than the model serving: one type per way it fails, so a caller (and
a benchmark) can tell a refused launch from a container that exited or an engine that died."""

from __future__ import annotations

from pathlib import Path

from ..errors import ClusterError


class LaunchError(ClusterError):
    """The launch did not end with the model serving; the message says where, why and what next."""

    exit_code = 1

    def __init__(self, message: str, saved: Path | None = None, detected_at: float | None = None):
        super().__init__(message)
        self.saved = saved
        self.detected_at = detected_at  # time.monotonic() when the watcher noticed


class LaunchRefused(LaunchError):
    """A precondition is not met; nothing was started."""


class LauncherFailed(LaunchError):
    """The launcher command itself failed."""


class ContainerExited(LaunchError):
    """A node's container exited (or vanished) while the model loaded."""


class EngineDied(LaunchError):
    """The API server went away while the containers stayed up (spark-vllm-docker issue #257)."""


class HealthTimeout(LaunchError):
    """/health did not answer 200 before the deadline."""


class WrongModel(LaunchError):
    """The API answers, but does not serve the model that was launched."""


class LaunchInterrupted(LaunchError):
    """Ctrl-C while waiting: the cluster is left as it is."""

    exit_code = 130
