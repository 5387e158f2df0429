"""The harness's one error root: every failure a user should see as a message, with its exit code."""


class BenchError(Exception):
    """A failure of the benchmark harness the user can act on; `exit_code` is what the CLI exits with."""

    exit_code = 1
