"""steerkit validate: schema + adapter + plan feasibility, without loading weights."""

from __future__ import annotations

import sys

import click

from ..errors import SteerkitError
from .common import guarded, set_option


@click.command("validate")
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False))
@set_option
@click.option("--skip-data", is_flag=True, help="Do not require the recipe's data files to exist (yet).")
@guarded
def command(recipes: tuple[str, ...], overrides: tuple[str, ...], skip_data: bool) -> None:
    """Check recipes: schema, adapter and plan feasibility. Loads no weights.

    \b
    Examples:
      steerkit validate recipes/unlearning/*.yaml
      steerkit validate my.yaml --set steer.layers.start=2
    """
    from ..pipeline import dry_plan

    failed = 0
    for path in recipes:
        try:
            plan, warnings = dry_plan(path, list(overrides), check_data=not skip_data)
        except SteerkitError as exc:
            failed += 1
            click.echo(exc.render(), err=True)
            continue
        for w in warnings:
            click.echo(f"warning: {path}: {w}", err=True)
        click.echo(f"ok  {path}  ({len(plan.writes)} writes, layers {plan.written_layers[0]}-"
                   f"{plan.written_layers[-1]}, gate {plan.gate.rule})")
    if failed:
        sys.exit(2)
