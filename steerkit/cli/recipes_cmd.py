"""steerkit recipes: discover and fork the shipped recipes."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from .common import guarded


def _shipped() -> dict[str, Path]:
    from ..resources import builtin_dir

    root = builtin_dir("recipes")
    return {str(p.relative_to(root).with_suffix("")): p for p in sorted(root.rglob("*.yaml"))}


@click.group("recipes")
def command() -> None:
    """List and copy the shipped recipes.

    \b
    Examples:
      steerkit recipes list
      steerkit recipes cp unlearning/mllmeraser_embedded_llava my_recipe.yaml
    """


@command.command("list")
def list_() -> None:
    """Shipped recipe names with their first description line."""
    from ..recipe import load_recipe

    for name, path in _shipped().items():
        try:
            desc = (load_recipe(path).recipe.description.strip().splitlines() or [""])[0]
        except Exception as exc:  # a broken shipped recipe is a bug, but listing must go on
            desc = f"(invalid: {type(exc).__name__})"
        click.echo(f"{name:<48} {desc}")


@command.command("cp")
@click.argument("name")
@click.argument("dest", type=click.Path())
@guarded
def cp(name: str, dest: str) -> None:
    """Copy shipped recipe NAME to DEST (a file or folder) to edit it."""
    from ..errors import Problem, RecipeError, choices_hint

    shipped = _shipped()
    if name not in shipped:
        raise RecipeError(f"no shipped recipe '{name}'", [Problem(f"unknown recipe '{name}'", None, None, None,
                                                                   None, choices_hint(name, shipped), "SK206")])
    target = Path(dest)
    if target.is_dir():
        target = target / shipped[name].name
    if target.exists():
        raise RecipeError("refusing to overwrite", [Problem(f"{target} exists", str(target), None, None, None,
                                                            "choose another DEST or delete it first", "SK207")])
    shutil.copyfile(shipped[name], target)
    click.echo(f"copied {name} -> {target}")
