"""The one exception family users see.

Every user-facing failure (bad config, bad input path, infeasible mixture request, tampered
manifest) raises a subclass of :class:`MixweaveError` whose message says *what to change*.
The CLI prints ``error: <message>`` on one line and exits non-zero, without a traceback.
This module imports nothing, so every layer may use it.
"""


class MixweaveError(Exception):
    """Base class: a user-correctable problem. The message must name the fix."""

    exit_code = 2


class ConfigError(MixweaveError):
    """A config key is unknown, missing, or has a bad value."""


class InputError(MixweaveError):
    """An input path, file or table cannot be used as given."""


class InfeasibleError(MixweaveError):
    """A request (budget, caps, weights) cannot be satisfied; the message gives the nearest feasible value."""


class ManifestError(MixweaveError):
    """A stage manifest is missing, malformed, tampered with, or points outside its root."""


class Interrupt:
    """Whether the process got SIGINT. PySpark's own SIGINT handler cancels the running jobs through
    the JVM gateway and raises KeyboardInterrupt, which can go wrong two ways: with the gateway gone it
    raises a Py4JError instead, and when the signal lands inside a finalizer (py4j's weakref callbacks)
    Python swallows the exception ("Exception ignored in ...", a traceback on stderr) and the run goes
    on. The flag survives both: :meth:`unraisable` keeps a swallowed KeyboardInterrupt quiet, the
    runner raises KeyboardInterrupt at its next stage boundary (:meth:`check`), and the CLI reports a
    Py4JError raised after a SIGINT as the interruption it is."""

    received = False

    @classmethod
    def check(cls) -> None:
        """Raise KeyboardInterrupt if SIGINT arrived and was swallowed (call where stopping is safe)."""
        if cls.received:
            raise KeyboardInterrupt

    @classmethod
    def unraisable(cls, previous_hook):
        """A ``sys.unraisablehook`` that records a KeyboardInterrupt raised inside a finalizer quietly
        and hands every other unraisable exception to ``previous_hook``."""

        def hook(info):
            if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
                cls.received = True
                return None
            return previous_hook(info)

        return hook

    @classmethod
    def chain(cls) -> None:
        """Wrap the current SIGINT handler (call after PySpark installed its own) so it sets the flag first."""
        import signal

        previous = signal.getsignal(signal.SIGINT)
        if getattr(previous, "_mixweave_flag", False) or not callable(previous):
            return

        def flag_then_previous(signum, frame):
            cls.received = True
            return previous(signum, frame)

        flag_then_previous._mixweave_flag = True
        signal.signal(signal.SIGINT, flag_then_previous)
