"""The cluster library's one error root: every failure a user should see as a message, with its
exit code. tasks.py catches this root alone, so a new error type needs no new handler there."""


class ClusterError(Exception):
    """A failure the user can act on. `exit_code` is what the CLI exits with; `prefix` (if any)
    goes before the message, e.g. `config error: `."""

    exit_code = 1
    prefix = ""

    def message(self) -> str:
        return f"{self.prefix}{self}"
