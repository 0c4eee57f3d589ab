"""steerkit unlearn: run a training-based baseline (GA, GA_Diff, KL_Min, NPO), or sweep its lr x steps."""

from __future__ import annotations

import json

import click

from .common import guarded, set_option


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _summary(report) -> str:
    t = report.train
    lines = [f"# {report.name}: {t.method} ({t.mode})", "",
             f"- training: {t.steps} steps ({t.epochs:.2f} forget epochs) in {t.train_seconds:.1f} s; "
             f"evaluation {report.eval_seconds:.1f} s",
             f"- passes (one example each): {t.forward_passes} forward + {t.backward_passes} backward, "
             f"{t.reference_forward_passes} reference forward",
             f"- parameters: {t.trainable_params:,} trainable; {t.changed_params:,} of {t.total_params:,} changed "
             f"({t.changed_tensors} tensors)",
             f"- peak memory: +{t.memory.get('rss_increase_mib')} MiB RSS over the loaded model "
             f"(maxrss delta {t.memory.get('maxrss_delta_mib')} MiB)",
             "- final losses: " + ", ".join(f"{k} {v:.4f}" for k, v in t.final_losses.items()),
             f"- checkpoint: {report.checkpoint or '(not saved)'}"]
    if report.metrics:
        lines += ["", "| split | VQA | QA | vanilla VQA | vanilla QA |", "|---|---|---|---|---|"]
        for split in report.metrics:
            cells = [report.accuracy(split, modality=m, vanilla=v) for v in (False, True) for m in ("vqa", "qa")]
            lines.append(f"| {split} | " + " | ".join("-" if c is None else f"{c:.0f}" for c in cells) + " |")
        lines.append("\n(classification accuracy %; full metrics in " + report.eval_paths.get("markdown", "eval/")
                     + ")")
    return "\n".join(lines)


@click.command("unlearn")
@click.argument("config", type=click.Path(dir_okay=False))
@set_option
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: the config's out).")
@click.option("--no-eval", is_flag=True, help="Train and save only.")
@click.option("--no-save", is_flag=True, help="Do not write the checkpoint.")
@click.option("--check", is_flag=True, help="Validate the config and print it resolved; load nothing.")
@click.option("--sweep-lr", metavar="LR,...", help="Sweep these learning rates on Val_Set instead of a run.")
@click.option("--sweep-steps", metavar="N,...", help="Step counts scored in the sweep (one run per lr).")
@click.option("--sweep-limit", type=int, help="Val items per (split, modality) cell in the sweep.")
@click.option("--max-retain-drop", type=float, default=10.0, show_default=True,
              help="Sweep rule: val_retain may fall at most this many points below vanilla.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@guarded
def command(config, overrides, out, no_eval, no_save, check, sweep_lr, sweep_steps, sweep_limit, max_retain_drop,
            as_json, quiet):
    """Unlearn with a training-based baseline: train on the forget set, save, evaluate like steering.

    CONFIG is a baseline YAML (see baselines/). Invalid configs exit with 2 and every problem located.

    \b
    Examples:
      steerkit unlearn baselines/npo.yaml
      steerkit unlearn baselines/ga.yaml --set train.lr=3e-4 --set train.steps=20 --out runs/ga-try
      steerkit unlearn baselines/ga.yaml --sweep-lr 3e-4,1e-3,3e-3 --sweep-steps 5,10,20,40
    """
    from ..unlearn.config import config_to_yaml, load_unlearn_config

    extra = list(overrides) + (["eval.enabled=false"] if no_eval else []) + (["save=false"] if no_save else [])
    loaded = load_unlearn_config(config, extra)
    if check:
        click.echo(config_to_yaml(loaded.config), nl=False)
        return
    if bool(sweep_lr) != bool(sweep_steps):
        raise click.UsageError("--sweep-lr and --sweep-steps go together")
    if sweep_lr:
        from ..unlearn.sweep import run_sweep

        result = run_sweep(loaded, _floats(sweep_lr), [int(x) for x in _floats(sweep_steps)], limit=sweep_limit,
                           max_retain_drop=max_retain_drop, progress=not quiet)
        click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.table())
        return
    from ..unlearn.trainer import run_unlearning

    report = run_unlearning(loaded, progress=not quiet, out_dir=out)
    if as_json:
        d = report.to_dict()
        d["train"].pop("history", None)
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(_summary(report))
