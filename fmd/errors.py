"""The one error hierarchy of fmd.

Every failure that fmd reports to a user, a client or a module derives from
:class:`FmdError`.  Each class carries a stable ``code`` (what a script or a
test matches on) and a message that says what was wrong and what to do.  The
CLI layer turns these into exit codes; the transports turn them into
``{"ok": false, "error": ...}`` replies.
"""

from __future__ import annotations


class FmdError(Exception):
    """Base class: ``code`` is stable, the message is for people."""

    code: str = "EFMD"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FmdError):
    """A property, a configuration file or a command-line option is invalid."""

    code = "EFMD_CONF"


class ProtocolError(FmdError):
    """An event, an FMRI or a class pattern is malformed."""

    code = "EFMD_PROTO"


class EventRejected(ProtocolError):
    """An ereport offered by a transport was refused (bad JSON, bad members, ...)."""

    code = "EFMD_EVENT_REJECTED"


class FmriError(ProtocolError):
    """An FMRI string or object cannot be parsed or formatted."""

    code = "EFMD_FMRI"


class InjectSyntaxError(FmdError):
    """fminject input in the injection language is malformed or does not type-check.

    ``line`` is the 1-based line of the offending statement or token.
    """

    code = "EFMD_INJECT"

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class StoreError(FmdError):
    """The event store failed (database unreachable, schema too new, ...)."""

    code = "EFMD_STORE"


class StoreRefused(StoreError):
    """New events were refused because the store cannot take them now (its disk is
    full or below ``log.minfree``, or the database is not answering); nothing of
    them was stored, and the sender may send them again later."""

    code = "EFMD_STORE_REFUSED"


class ModuleError(FmdError):
    """A module could not be loaded, validated, or failed while running."""

    code = "EFMD_MOD"


class ModuleApiError(ModuleError):
    """A module used the module API wrongly (unknown SERD engine, closed case, ...)."""

    code = "EFMD_MOD_API"


class CaseStateError(FmdError):
    """An illegal case transition was requested."""

    code = "EFMD_CASE_STATE"


class SerdError(FmdError):
    """A SERD engine was created twice, not found, or given bad parameters."""

    code = "EFMD_SERD"


class DictionaryError(FmdError):
    """A fault dictionary or message file is malformed, or a class has no code."""

    code = "EFMD_DICT"


class TopoLookupError(FmdError, LookupError):
    """A cpuid, APIC id or FMRI is not in this machine's topology."""

    code = "EFMD_TOPO"


class TransportError(FmdError):
    """A transport could not be opened or lost its peer."""

    code = "EFMD_XPRT"


class AdmError(FmdError):
    """A request over the control socket failed (daemon down, permission, bad request)."""

    code = "EFMD_ADM"


class DaemonNotRunning(AdmError):
    """No fmd answers on the control socket of the given root."""

    code = "EFMD_ADM_NOTRUNNING"


class RetireBackendError(FmdError):
    """The retire agent's backend could not offline, online or query a CPU or page.

    ``retryable`` says whether trying again later may succeed (the resource was
    busy) or not (no such CPU, permission denied, not supported here).
    """

    code = "EFMD_RETIRE"

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class StoreCorrupt(StoreError):
    """The SQLite database file is damaged (SQLite reports it malformed or not a database)."""

    code = "EFMD_STORE_CORRUPT"
