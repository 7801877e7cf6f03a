"""``mixweave verify``: re-hash every file each artifact's manifest lists; flag added files."""

from __future__ import annotations

import click


@click.command("verify")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
def command(artifacts):
    """Re-hash every file listed in each artifact's _manifest.json."""
    from ..data.manifest import verify_stage

    for artifact in artifacts:
        manifest = verify_stage(artifact)
        click.echo(f"ok  {artifact}  ({manifest['stage']}, {len(manifest['files'])} files)")
