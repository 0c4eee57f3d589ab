"""steerkit eval and steerkit demo: vanilla vs steered on the benchmark splits."""

from __future__ import annotations

from pathlib import Path

import click

from .common import activation_options, guarded, remote_option, set_option

DEMO_RECIPE = "unlearning/mllmeraser_embedded_llava"


def _run(recipe_path, bundle, out, overrides, activations="auto", spill_dir=None, remote=None):
    from ..eval_job import run_eval
    from ..evaluate.report import markdown_report
    from ..compose_pipeline import get_bundles
    from ..recipe import load_recipe
    from ..remote import open_session

    loaded = load_recipe(recipe_path, list(overrides))
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    log(f"loading {loaded.recipe.model.id} (embedded models are trained once and cached)")
    session = open_session(loaded, remote)
    b = get_bundles(loaded, session, bundle, log=log, activations=activations, spill_dir=spill_dir,
                    extract_missing=remote is None)
    job = run_eval(loaded, session, b, out_dir=Path(out) if out else None)
    click.echo(markdown_report(job["results"], f"{loaded.recipe.name}: vanilla vs steered"))
    for kind, path in job["paths"].items():
        log(f"wrote {kind}: {path}")


@click.command("eval")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--bundle", multiple=True,
              help="Bundle file, merged set, Hub-like folder or hf://OWNER/REPO[@REV][/FILE] (default: the recipe's "
                   "bundle.path + bundle.compose); give it once per forget request to evaluate them together.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: eval.out).")
@remote_option
@activation_options
@set_option
@guarded
def command(recipe, bundle, out, remote, activations, spill_dir, overrides):
    """Evaluate RECIPE: every metric for vanilla and steered, gate histograms and plots.

    \b
    Examples:
      steerkit eval recipes/unlearning/mllmeraser_embedded_llava.yaml
      steerkit eval my.yaml --set eval.forget_ratio=5 --out runs/f5
    """
    _run(recipe, bundle, out, overrides, activations, spill_dir, remote)


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@guarded
def demo(out):
    """The main job on the embedded default: train (once), extract, forget, evaluate, plot.

    \b
    Example:
      steerkit demo
    """
    from ..resources import builtin_dir

    # outputs go under --out in the current folder, never inside the installed package
    bundle = str((Path(out) / "bundle.safetensors").resolve())
    _run(builtin_dir("recipes") / f"{DEMO_RECIPE}.yaml", (), out, (f"bundle.path={bundle}",))
