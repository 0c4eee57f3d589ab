"""``steerkit inspect BUNDLE``: show what a bundle holds without loading any model.

A bundle is only useful if people can see what it was made from before they trust it, so this
prints the manifest and every tensor's name, shape and dtype. It verifies the file exactly as
``Bundle.load`` does (a corrupt file exits 2 with the rendered problems, never a traceback) and
imports no model stack (transformers, nnsight), so it stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from steerkit.errors import BundleError

_WIDTH = 100  # long manifest values (the recipe) are shortened in the table; --json has them whole


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= _WIDTH else text[: _WIDTH - 3] + "..."


@click.command("inspect")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and tensor table as JSON.")
@click.pass_context
def command(ctx: click.Context, bundle: Path, as_json: bool) -> None:
    """Print a bundle's manifest and tensors (names, shapes, dtypes); loads no model.

    \b
    Examples:
      steerkit inspect runs/mllmeraser-llava15-7b/bundle.safetensors
      steerkit inspect bundle.safetensors --json | jq .manifest.sites
    """
    from steerkit.bundle import Bundle  # torch + safetensors only

    try:
        loaded = Bundle.load(bundle)
    except BundleError as err:
        if os.environ.get("STEERKIT_DEBUG") == "1":
            raise
        click.echo(err.render(), err=True)
        ctx.exit(err.exit_code)
        return
    manifest = loaded.manifest.model_dump(mode="json")
    tensors = [{"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
               for name, t in sorted(loaded.tensors.items())]
    if as_json:
        click.echo(json.dumps({"path": str(bundle), "manifest": manifest, "tensors": tensors},
                              indent=2, ensure_ascii=False))
        return
    key_width = max(len(k) for k in manifest)
    click.echo(f"bundle  {bundle}\n")
    for key, value in manifest.items():
        click.echo(f"  {key:<{key_width}}  {_short(value) if value is not None else '-'}")
    if manifest.get("strength"):  # how lambda was calibrated (steer.strength.search), as a table
        from steerkit.strength import render_table

        click.echo("")
        for line in render_table(manifest["strength"]):
            click.echo(line)
    name_width = max(len(t["name"]) for t in tensors)
    click.echo(f"\ntensors ({len(tensors)})")
    for t in tensors:
        click.echo(f"  {t['name']:<{name_width}}  {str(t['shape']):<10}  {t['dtype']}")
