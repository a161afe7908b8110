"""Bad input for the gpusizer command: one line, exit status 2, no traceback."""

from __future__ import annotations

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """A problem with what the user gave: the message names the file (or option) and what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line
