"""steerkit eval and steerkit demo: vanilla vs steered on the benchmark splits."""

from __future__ import annotations

from pathlib import Path

import click

from .common import activation_options, foreign_option, guarded, remote_option, set_option

DEMO_RECIPE = "unlearning/mllmeraser_embedded_llava"


def _run(recipe_path, bundle, out, overrides, activations="auto", spill_dir=None, remote=None, allow_foreign=False):
    from ..eval_job import run_eval
    from ..evaluate.report import markdown_report
    from ..compose_pipeline import composing, get_bundles
    from ..pipeline import preflight_bundle
    from ..recipe import load_recipe
    from ..remote import open_session

    loaded = load_recipe(recipe_path, list(overrides))
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    checked = None if composing(loaded, bundle) else preflight_bundle(
        loaded, bundle_override=bundle[0] if bundle else None, allow_foreign=allow_foreign, log=log)
    log(f"loading {loaded.recipe.model.id} (embedded: the shipped checkpoint, else trained once and cached)")
    session = open_session(loaded, remote)
    b = get_bundles(loaded, session, bundle, log=log, activations=activations, spill_dir=spill_dir,
                    extract_missing=remote is None, allow_foreign=allow_foreign, preflight=checked)
    job = run_eval(loaded, session, b, out_dir=Path(out) if out else None)
    click.echo(markdown_report(job["results"], f"{loaded.recipe.name}: vanilla vs steered"))
    open_report = job["results"]["steered"].meta.get("retain_open")
    if open_report:
        from ..gate_report import report_lines

        lines, warnings = report_lines(open_report)
        click.echo("\n".join(["", *lines]))
        for w in warnings:
            log(w)
    for kind, path in job["paths"].items():
        log(f"wrote {kind}: {path}")


@click.command("eval")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--bundle", multiple=True,
              help="Bundle file, merged set, Hub-like folder or hf://OWNER/REPO[@REV][/FILE] (default: the recipe's "
                   "bundle.path + bundle.compose); give it once per forget request to evaluate them together.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: eval.out).")
@foreign_option
@remote_option
@activation_options
@set_option
@guarded
def command(recipe, bundle, out, allow_foreign, remote, activations, spill_dir, overrides):
    """Evaluate RECIPE: every metric for vanilla and steered, gate histograms and plots.

    \b
    Examples:
      steerkit eval recipes/unlearning/mllmeraser_embedded_llava.yaml
      steerkit eval my.yaml --set eval.forget_ratio=5 --out runs/f5
    """
    _run(recipe, bundle, out, overrides, activations, spill_dir, remote, allow_foreign)


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@guarded
def demo(out):
    """The main job on the embedded default (the shipped LLaVA): extract, calibrate, forget, evaluate, plot.

    \b
    Example:
      steerkit demo
    """
    from ..resources import builtin_dir

    # outputs go under --out in the current folder, never inside the installed package; {fit}: a new
    # steerkit (another world generator) fits a new bundle instead of refusing the old one
    bundle = str((Path(out) / "bundle-{fit}.safetensors").resolve())
    _run(builtin_dir("recipes") / f"{DEMO_RECIPE}.yaml", (), out, (f"bundle.path={bundle}",))
