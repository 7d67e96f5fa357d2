"""Kind checks for the lessons' Try-it exercises.

A check never raises: it answers ``yes: ...`` or ``not yet: ...`` so a student
can run it as often as they like, and a notebook run top to bottom (with the
exercise still empty) keeps going.
"""

from __future__ import annotations

from collections.abc import Callable


def check(solved: Callable[[], object], *, hint: str, success: str = "that's it.") -> bool:
    """Print whether ``solved()`` is true, with a hint when it is not.

    ``solved`` is a function (often a ``lambda``) that runs the student's code
    and returns something true when the exercise is done.
    """
    try:
        result = solved()
    except NotImplementedError:
        print("not yet: the exercise still holds its placeholder; write your answer there.")
        return False
    except Exception as error:  # a student's bug is a hint, not a crash
        print(f"not yet: your code raised {type(error).__name__}: {error}. Hint: {hint}")
        return False
    if result is None or result is Ellipsis:
        print("not yet: the exercise still holds its placeholder; write your answer there.")
        return False
    if result:
        print(f"yes: {success}")
        return True
    print(f"not yet: {hint}")
    return False
