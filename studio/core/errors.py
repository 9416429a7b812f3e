"""The one exception type the command line and the window turn into a clear sentence."""


class StudioError(Exception):
    """A problem with the user's input or environment, told in one sentence.

    Raised for anything the user can fix (a broken header, a missing file, a bad
    policy). The command line prints it without a traceback and exits non-zero;
    the window shows it in a dialog. Bugs stay ordinary exceptions.
    """
