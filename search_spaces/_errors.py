"""The error every check in this package raises."""

import difflib
from collections.abc import Iterable


class SearchSpaceError(ValueError):
    """A search space or a search-space file that cannot be searched.

    The message names the parameter (its dotted config path) or the file, the value received and
    what was expected.
    """


def nearest_name(word: str, names: Iterable[str]) -> str:
    """Return a " (did you mean 'x'?)" hint for the closest of ``names``, or an empty string."""
    close = difflib.get_close_matches(str(word), list(names), n=1, cutoff=0.4)
    return f" (did you mean {close[0]!r}?)" if close else ""
