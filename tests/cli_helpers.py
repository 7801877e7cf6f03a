"""What the CLI tests share: run ``mixweave.cli.main`` in-process like the console script does."""

from __future__ import annotations

from mixweave.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``mixweave ARGS``; a normal return is exit code 0."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err
