"""steerkit bundle: merge request bundles into one portable set, and list a set's parts."""

from __future__ import annotations

import click

from .common import guarded


@click.group("bundle")
def command() -> None:
    """Merge forget-request bundles into one file and list what a file holds (docs/forget-requests.md).

    \b
    Examples:
      steerkit bundle merge requests/r1.safetensors requests/r2.safetensors -o requests/all.safetensors
      steerkit bundle parts requests/all.safetensors
    """


def _people(bundle) -> list[str]:
    """The forget people a part was fitted on, read from the recipe its manifest records."""
    gate = (bundle.manifest.recipe or {}).get("gate") or {}
    return sorted({i for src in gate.get("forget") or [] for i in (src.get("ids") or [])})


@command.command("merge")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="The merged set to write.")
@guarded
def merge(bundles: tuple[str, ...], out: str) -> None:
    """Merge BUNDLES (single bundles or sets) into one set file listing every part and its hash.

    Applying the set is applying its parts together; the parts must be for the same model and layers.
    """
    from ..bundle_set import load_parts, save_set

    parts = [p for b in bundles for p in load_parts(b)]
    save_set(parts, out)
    click.echo(f"wrote {out}: {len(parts)} parts")
    for i, p in enumerate(parts):
        click.echo(f"  part {i}  {p.manifest.tensors_sha256[:12]}  {p.source}")


@command.command("parts")
@click.argument("bundle", type=click.Path(dir_okay=False))
@guarded
def parts(bundle: str) -> None:
    """List the parts of BUNDLE (one line for a single bundle): hash, model, forget people, creation time."""
    from ..bundle_set import load_parts

    for i, p in enumerate(load_parts(bundle)):
        m = p.manifest
        people = ",".join(_people(p)) or "-"
        click.echo(f"part {i}  {m.tensors_sha256[:12]}  {m.model_id}  people {people}  {m.created_at}")
