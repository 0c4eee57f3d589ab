"""The ``steerkit`` command group. Each command lives in its own module and is a thin API wrapper."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="steerkit")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (also STEERKIT_DEBUG=1).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Declarative activation steering and test-time unlearning for multimodal LLMs.

    \b
    Examples:
      steerkit validate recipes/unlearning/mllmeraser_embedded_llava.yaml
      steerkit apply recipes/unlearning/mllmeraser_embedded_llava.yaml --prompt "Who is this?" --image face.png
      steerkit adapters list
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register() -> None:
    import importlib

    for name in ("validate_cmd", "compile_cmd", "schema_cmd", "adapters_cmd", "recipes_cmd", "inspect_cmd",
                 "apply_cmd", "extract_cmd", "eval_cmd", "train_cmd", "unlearn_cmd", "bundle_cmd"):
        try:
            module = importlib.import_module(f"steerkit.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"steerkit.cli.{name}":
                continue  # command not built in this version
            raise
        cli.add_command(module.command)
        if hasattr(module, "demo"):
            cli.add_command(module.demo)


_register()


def main() -> None:
    cli(prog_name="steerkit")
