"""Errors a user can cause. The CLI turns them into one line and a non-zero exit."""


class DeepleakError(Exception):
    """A problem with the user's config, data or request, stated in one sentence."""
