"""steerkit adapters: list, show and live-check per-architecture adapters."""

from __future__ import annotations

import click

from .common import guarded


@click.group("adapters")
def command() -> None:
    """List, show and check adapters (adapters/*.yaml).

    \b
    Examples:
      steerkit adapters list
      steerkit adapters show qwen2_5_vl
      steerkit adapters check ./my-local-llava
    """


@command.command("list")
@guarded
def list_() -> None:
    """One line per built-in adapter: name, architectures, transformers range."""
    from ..adapter import list_adapters

    for name, (a, _) in sorted(list_adapters().items()):
        kind = "vision-language" if a.multimodal else "text-only"
        click.echo(f"{name:<12} {kind:<16} {a.match.transformers:<10} {', '.join(a.match.architectures)}")


@command.command("show")
@click.argument("name")
@guarded
def show(name: str) -> None:
    """Print the adapter file NAME."""
    from ..adapter import adapter_path, get_adapter

    get_adapter(name)
    click.echo(adapter_path(name).read_text())


@command.command("check")
@click.argument("model")
@click.option("--adapter", default="auto", help="Adapter name (default: match config.architectures[0]).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the Hub (off by default).")
@guarded
def check(model: str, adapter: str, trust_remote_code: bool) -> None:
    """Load MODEL (Hub id or folder) and prove every site of its adapter exists with shape (b, s, hidden)."""
    from ..adapter_check import check_adapter
    from ..recipe import ModelSpec
    from ..session import load_session

    session = load_session(ModelSpec(id=model, adapter=adapter, trust_remote_code=trust_remote_code))
    for line in check_adapter(session):
        click.echo(line)
    click.echo(f"adapter '{session.adapter.name}' fits {session.architecture}")
