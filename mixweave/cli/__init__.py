"""The ``mixweave`` command line: the click group, one module per command, and ``main``.

Every command that runs a stage takes ``--config CONFIG`` and ``--set KEY=VALUE`` the same way
(``run``, ``ingest``, ``mix``, ``utility``, ``export``, ``train``, ``report``); without ``--config``
the stage commands take their inputs as flags. User errors
(:class:`~mixweave.errors.MixweaveError`) print one ``error:`` line and exit 2; unexpected failures
print one ``internal error:`` line (``MIXWEAVE_DEBUG=1`` shows the traceback) and exit 1; Ctrl-C
prints one line and exits 130. Library code logs through stdlib ``logging``; this package installs
the handler.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

import click

from .. import __version__
from ..errors import Interrupt, MixweaveError

LOG = logging.getLogger("mixweave")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (survives redirection and test capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("mixweave")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Libraries (py4j during a Ctrl-C, pyspark) log tracebacks to the root logger, and some call
    # logging.basicConfig; a NullHandler there keeps users' consoles to mixweave's own lines.
    top = logging.getLogger()
    if not any(isinstance(h, logging.NullHandler) for h in top.handlers):
        top.handlers[:] = [logging.NullHandler()]
    for noisy in ("py4j", "pyspark", "numba", "matplotlib", "sentence_transformers", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mixweave")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """mixweave: how much of each source (mixtures) and in what order (In-Context Pretraining)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    _setup_logging(-1 if quiet else verbose)


def _attach_commands() -> None:
    """Every command, attached unconditionally: a broken import is a bug, not a missing command."""
    from . import corpus, export, ingest, mix, report, run, study, train, utility, verify

    for module in (run, ingest, mix, utility, export, train, study, report, verify, corpus):
        cli.add_command(module.command)


_attach_commands()


def console_main() -> None:
    """The ``mixweave`` console script and ``python -m mixweave.cli``: :func:`main`, then ``gc.freeze()``
    before the interpreter exits, so its final garbage collection does not walk every object the
    command imported (torch, OpenVINO, pyarrow, ...): ~0.65 of the ~4.6 CPU-s of a small in-process
    ``mixweave run`` (3 sources x 30 documents, measured alternated). Not in :func:`main` itself, which tests and other programs call in their own
    process (frozen objects are never collected again)."""
    try:
        main()
    finally:
        gc.freeze()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, no tracebacks for users."""
    previous_hook = sys.unraisablehook
    sys.unraisablehook = Interrupt.unraisable(previous_hook)
    try:
        _main(argv)
    finally:
        sys.unraisablehook = previous_hook


def _main(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="mixweave", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _exit_interrupted()
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MixweaveError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line
        if Interrupt.received:  # Ctrl-C inside a Spark job can surface as a Py4JError (errors.Interrupt)
            _exit_interrupted()
        if os.environ.get("MIXWEAVE_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"internal error: {type(exc).__name__}: {message} (set MIXWEAVE_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


def _exit_interrupted() -> None:
    click.echo("error: interrupted; run the same command again to resume (finished stages are kept)", err=True)
    sys.exit(130)
