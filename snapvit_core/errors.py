"""User-facing errors: every failure a user can cause names the problem and the fix."""

from __future__ import annotations


class SnapViTError(Exception):
    """An error caused by user input (a bad file, ratio, model id ...).

    The CLI prints ``str(error)`` as one line and exits non-zero; the app shows it in an
    error box. Library code raises it instead of letting a raw traceback reach the user.

    Args:
        problem: what is wrong, naming the offending value.
        fix: what the user can do about it.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        if problem.startswith("Caught ") and "\nOriginal Traceback" in problem:
            # re-raised by a torch DataLoader from a worker process as SnapViTError(its traceback text):
            # keep the worker's message (the traceback's last line, after the class name)
            problem = problem.rstrip().rsplit("\n", 1)[-1].split(": ", 1)[-1]
        self.problem = printable(problem)
        self.fix = printable(fix)
        super().__init__(f"{self.problem} {self.fix}".strip())


def printable(text: object) -> str:
    """``text`` as one line with no terminal control: control characters (newlines, escape codes,
    bidi overrides ...) are written as Python escapes (a newline in a file name reads ``\\n``)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def optional_import(name: str, problem: str, fix: str):
    """The module ``name`` (a package not every install has), or a SnapViTError(``problem``, ``fix``) without it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise SnapViTError(problem, fix) from None


class CancelledError(SnapViTError):
    """Raised inside long work when the caller's cancel flag is set."""

    def __init__(self, what: str = "work") -> None:
        super().__init__(f"The {what} was cancelled.", "Nothing was written.")
