"""steerkit extract: build a recipe's direction bundle."""

from __future__ import annotations

import click

from .common import activation_options, guarded, set_option


@click.command("extract")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Bundle path (default: the recipe's).")
@click.option("--retain-cache", type=click.Path(dir_okay=False),
              help="Keep the gate's retain activations in this file and reuse them when it matches (model, "
                   "read sites, retain data): a later forget request costs only its own prompts.")
@activation_options
@set_option
@guarded
def command(recipe: str, out: str | None, retain_cache: str | None, activations: str, spill_dir: str | None,
            overrides: tuple[str, ...]) -> None:
    """Extract directions and fit the gate for RECIPE; write the bundle atomically.

    \b
    Examples:
      steerkit extract recipes/unlearning/mllmeraser_embedded_llava.yaml
      steerkit extract my.yaml -o runs/my.safetensors --set gate.rho=0.4
      steerkit extract big.yaml --activations disk --spill-dir /scratch
      steerkit extract my.yaml -o requests/r2.safetensors --retain-cache runs/retain.safetensors \\
          --set 'gate.forget.0.ids=["031","047"]'
    """
    from ..errors import Problem, RecipeError
    from ..extraction import extract
    from ..pipeline import bundle_path, zero_direction_warning
    from ..recipe import load_recipe
    from ..session import load_session

    loaded = load_recipe(recipe, list(overrides))
    path = bundle_path(loaded, out, for_writing=True)
    if path is None:
        raise RecipeError("nowhere to write the bundle", [Problem("no bundle.path and no -o", recipe, None, None,
                                                                  "bundle.path", "pass -o BUNDLE", "SK205")])
    session = load_session(loaded.recipe.model, loaded.base_dir)
    bundle = extract(loaded, session, activations=activations, spill_dir=spill_dir, retain_cache=retain_cache)
    bundle.save(path)
    m = bundle.manifest
    click.echo(f"wrote {path}: {len(bundle.tensors)} tensors, layers {m.sites}, tensors sha256 "
               f"{m.tensors_sha256[:12]}")
    if m.strength:
        s = m.strength
        click.echo(f"  lambda {s['lambda']:g} calibrated on {s['n_forget']} forget and {s['n_retain']} retain "
                   f"questions ({s['metric']}; steerkit inspect {path} shows the table)"
                   + ("" if s["within_budget"] else "; WARNING: no strength kept retain within budget"))
    warning = zero_direction_warning(bundle)
    if warning:
        click.echo(f"  {warning}", err=True)
    fit = (m.gate or {}).get("fit")
    if fit:
        for layer, s in list(fit.items())[:3]:
            opened = s.get("retain_open_heldout")
            target = (m.gate or {}).get("retain_open_rate")
            click.echo(f"  gate[{layer}]: AUC in-sample {s['auc_in_sample']}, held-out retain "
                       f"{s['auc_heldout_retain']}" + ("" if opened is None else
                                                       f"; open on {100 * opened:.1f} % of held-out retain prompts"
                                                       + ("" if target is None else
                                                          f" (target gate.retain_open_rate {100 * target:.1f} %)")),
                       err=True)
