"""steerkit schema: JSON Schema of recipes, adapters and bundle manifests (for editors and docs)."""

from __future__ import annotations

import json

import click


@click.command("schema")
@click.argument("what", type=click.Choice(["recipe", "adapter", "bundle"]))
def command(what: str) -> None:
    """Print the JSON Schema of WHAT to stdout.

    \b
    Examples:
      steerkit schema recipe > recipe.schema.json
      steerkit schema adapter
    """
    from pydantic import BaseModel

    model: type[BaseModel]
    if what == "recipe":
        from ..recipe import Recipe

        model = Recipe
    elif what == "adapter":
        from ..adapter import Adapter

        model = Adapter
    else:
        from ..bundle import BundleManifest

        model = BundleManifest
    click.echo(json.dumps(model.model_json_schema(by_alias=True), indent=2))
