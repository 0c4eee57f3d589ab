"""steerkit apply: run a recipe's steering on prompts (extracting the bundle first when missing)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import activation_options, foreign_option, guarded, remote_option, set_option


@click.command("apply")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--bundle", "bundles", multiple=True,
              help="Bundle file, merged set, Hub-like folder or hf://OWNER/REPO[@REV][/FILE] (default: the recipe's "
                   "bundle.path + bundle.compose). Give it once per forget request to apply several together.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False), help="jsonl: {prompt, image?} per line.")
@click.option("--prompt", help="A single prompt (instead of --input).")
@click.option("--image", type=click.Path(dir_okay=False), help="Image for --prompt.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write one JSON line per input here, rewritten "
              "atomically after every batch (finished answers survive a failure or Ctrl-C); not the --input file.")
@click.option("--compare", is_flag=True, help="Also generate the unsteered answer for each input.")
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 1024))
@foreign_option
@remote_option
@activation_options
@set_option
@guarded
def command(recipe, bundles, input_path, prompt, image, out, compare, max_new_tokens, batch_size, allow_foreign,
            remote, activations, spill_dir, overrides):
    """Steer a model with RECIPE on prompts and print or write the answers.

    \b
    Examples:
      steerkit apply recipes/unlearning/mllmeraser_embedded_llava.yaml --prompt "Who is this?" --image face.png
      steerkit apply my.yaml --input prompts.jsonl --out answers.jsonl --compare
      steerkit apply hub_model.yaml --prompt "Who is this?" --image face.png --remote ndif
      steerkit apply my.yaml --input prompts.jsonl --bundle requests/r1.safetensors --bundle requests/r2.safetensors
    """
    from tqdm import tqdm

    from ..apply_inputs import ApplyRow, open_image, prompt_problem, read_apply_jsonl
    from ..apply_stream import ResultSink, answer_all, check_out_path
    from ..errors import DataError, Problem
    from ..compose_pipeline import composing, get_bundles, plan_for_bundles
    from ..pipeline import preflight_bundle
    from ..recipe import load_recipe
    from ..runtime_nnsight import steer
    from ..remote import open_session

    if (input_path is None) == (prompt is None):
        raise DataError("give exactly one of --input or --prompt", [Problem(
            "no input" if input_path is None else "both --input and --prompt given", None, None, None, None,
            "e.g. --prompt 'Who is this?' --image face.png", "SK740")])
    loaded = load_recipe(recipe, list(overrides))
    # Everything that can be checked without the model is checked before it loads (#18): the output
    # target, the inputs and an existing bundle, so a bad one costs seconds, not a model load.
    out_path = check_out_path(out, input_path) if out else None
    where = input_path or "--prompt"
    if prompt is not None:
        problem = prompt_problem(prompt, "--prompt", None)
        if problem:
            raise DataError("the --prompt cannot be used", [problem])
        img, problem = (None, None) if image is None else open_image(Path(image), "--image", None)
        if problem:
            raise DataError("the --image cannot be used", [problem])
        rows, problems = [ApplyRow(1, prompt, image, img)], []
    else:
        rows, problems = read_apply_jsonl(Path(input_path))
    for p in problems:
        click.echo(p.render(), err=True)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    # an explicit --bundle that cannot be read, or a bundle fitted on another world / data, fails here
    checked = None if composing(loaded, bundles) else preflight_bundle(
        loaded, bundle_override=bundles[0] if bundles else None, allow_foreign=allow_foreign, log=log)
    session = open_session(loaded, remote)
    found = get_bundles(loaded, session, bundles, log=log, activations=activations, spill_dir=spill_dir,
                        extract_missing=remote is None, allow_foreign=allow_foreign, preflight=checked)
    plan = plan_for_bundles(loaded, session, found)
    if len(found) > 1:
        log(f"composing {len(found)} bundles (sum of gated writes); 'gate' is each row's largest")
    limit = getattr(session.model.config, "max_position_embeddings", None) or getattr(
        getattr(session.model.config, "text_config", None), "max_position_embeddings", None)

    def report(problem: Problem) -> None:
        problems.append(problem)
        click.echo(problem.render(), err=True)

    def check(r: ApplyRow) -> Problem | None:
        n_tok = session.encode([r.prompt], [r.image]).inputs["input_ids"].shape[1]
        if limit and n_tok + max_new_tokens > limit:
            return Problem(f"prompt is {n_tok} tokens; with {max_new_tokens} new tokens it exceeds the model's "
                           f"context of {limit}", where, r.line, None, "prompt",
                           "shorten the prompt or --max-new-tokens", "SK746")
        return None

    sink = ResultSink(out_path, click.echo)
    with steer(session.model, plan, session.image_token_id, remote=session.remote) as steerer:
        def answer(ok: list[ApplyRow]) -> list[dict]:
            prompts, images = [r.prompt for r in ok], [r.image for r in ok]
            steered = session.generate(prompts, images, max_new_tokens, steerer=steerer)
            gates = steerer.gate_values(session.encode(prompts, images).inputs)
            first_gate = next(iter(gates.values()))
            clean = session.generate(prompts, images, max_new_tokens) if compare else [None] * len(ok)
            recs = [{"line": r.line, "prompt": r.prompt, "image": r.image_path, "steered": steered[i],
                     "gate": round(float(first_gate[i]), 4)} for i, r in enumerate(ok)]
            if compare:
                for rec, c in zip(recs, clean):
                    rec["unsteered"] = c
            return recs

        bar = lambda it: tqdm(it, desc="apply", file=sys.stderr, disable=len(rows) < 2)  # noqa: E731
        try:
            answer_all(rows, batch_size, answer, check, sink, where, report, bar)
        except KeyboardInterrupt:
            kept = f"{len(sink.rows)} finished answers are in {out}" if out and sink.rows else (
                "nothing had finished; --out is unchanged" if out else f"{len(sink.rows)} answers were printed")
            click.echo(f"interrupted; {kept}", err=True)
            sys.exit(130)
    n_open = sum(1 for r in sink.rows if r["gate"] > 0.5)
    click.echo(f"done: {len(sink.rows)} answered, {len(problems)} skipped (see messages above), "
               f"gate open (>0.5) on {n_open}" + (f"; wrote {out}" if out and sink.rows else ""), err=True)
    if problems:
        sys.exit(2)
