"""The plug-in's two errors (Python 2.7 + 3, standard library only): what the artist can fix
(UserError), and what the runner reports of the server (RunnerError, kind in
RUNNER_ERROR_KINDS: magic_protocol.client.error_kind's names, plus "missing")."""

RUNNER_ERROR_KINDS = ("unreachable", "mismatch", "failed", "cancelled", "timeout", "missing",
                      "refused")


class UserError(Exception):
    """Something the artist can fix; str() is the one-line message shown in GIMP.
    cancelled=True when the artist stopped the job (GIMP's CANCEL status, not an error)."""

    def __init__(self, message, cancelled=False):
        Exception.__init__(self, message)
        self.message = message
        self.cancelled = cancelled


class RunnerError(Exception):
    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
