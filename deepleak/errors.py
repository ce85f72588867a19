"""Errors a user can cause. The CLI turns them into one line and a non-zero exit."""


class DeepleakError(Exception):
    """A problem with the user's config, data or request, stated in one sentence."""


def fail(message: str) -> None:
    """End the command with ``message`` as one line on stderr and exit code 2."""
    import sys  # noqa: PLC0415

    sys.stderr.write(f"deepleak: error: {message}\n")
    raise SystemExit(2)
