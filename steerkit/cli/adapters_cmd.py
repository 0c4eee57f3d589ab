"""steerkit adapters: list, show and live-check per-architecture adapters."""

from __future__ import annotations

import click

from .common import guarded


@click.group("adapters")
def command() -> None:
    """List, show and check adapters (adapters/*.yaml, and folders on $STEERKIT_ADAPTERS).

    \b
    Examples:
      steerkit adapters list
      steerkit adapters show qwen2_5_vl
      steerkit adapters check ./my-local-llava
      STEERKIT_ADAPTERS=./my-adapters steerkit adapters check ./my-model
    """


@command.command("list")
@guarded
def list_() -> None:
    """One line per adapter: name, kind, transformers range, architectures (and the file, for user folders).

    Files that fail validation are listed last with their error; they are skipped for every other model."""
    from ..adapter import broken_adapters, check_version, list_adapters
    from ..resources import builtin_dir

    shipped = builtin_dir("adapters").resolve()
    for name, (a, path) in sorted(list_adapters().items()):
        kind = "vision-language" if a.multimodal else "text-only"
        where = "" if path.resolve().parent == shipped else f"  ({path})"
        stale = "  (transformers outside range)" if check_version(a, path) else ""
        click.echo(f"{name:<16} {kind:<16} {a.match.transformers:<10} {', '.join(a.match.architectures)}{where}{stale}")
    for path, err in sorted(broken_adapters().items()):
        click.echo(f"{'(invalid)':<16} {path}: {err.summary}; `steerkit adapters show {path}` lists the problems")


@command.command("show")
@click.argument("name")
@guarded
def show(name: str) -> None:
    """Print the adapter NAME (or the adapter file at a path)."""
    from pathlib import Path

    from ..adapter import adapter_path, get_adapter

    get_adapter(name)  # raises with every problem of an invalid file
    path = Path(name) if name.endswith((".yaml", ".yml")) or "/" in name else adapter_path(name)
    click.echo(path.read_text())


@command.command("check")
@click.argument("model")
@click.option("--adapter", default="auto",
              help="Adapter name or path to an adapter YAML (default: match config.architectures[0]).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the Hub (off by default).")
@guarded
def check(model: str, adapter: str, trust_remote_code: bool) -> None:
    """Load MODEL (Hub id or folder) and prove its adapter: every site exists with shape (b, s, hidden), the
    image token marks exactly the image features, and the residual stream is continuous between blocks
    (or where it is not)."""
    from ..adapter_check import check_adapter
    from ..recipe import ModelSpec
    from ..session import load_session

    session = load_session(ModelSpec(id=model, adapter=adapter, trust_remote_code=trust_remote_code))
    for line in check_adapter(session):
        click.echo(line)
    click.echo(f"adapter '{session.adapter.name}' fits {session.architecture}")
