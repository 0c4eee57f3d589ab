"""steerkit compile: print the Plan a recipe compiles to (a dry run)."""

from __future__ import annotations

import click

from .common import guarded, set_option


@click.command("compile")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--bundle", help="Bundle file, Hub-like folder or hf://OWNER/REPO[@REV][/FILE] (default: recipe's).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@set_option
@guarded
def command(recipe: str, bundle: str | None, fmt: str, overrides: tuple[str, ...]) -> None:
    """Compile RECIPE to a Plan and print it. No weights are loaded.

    \b
    Examples:
      steerkit compile recipes/unlearning/mllmeraser_embedded_llava.yaml
      steerkit compile my.yaml --format json
    """
    from ..pipeline import dry_plan

    plan, warnings = dry_plan(recipe, list(overrides), bundle_path_=bundle)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(plan.to_json() if fmt == "json" else plan.describe())
