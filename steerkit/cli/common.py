"""Shared CLI plumbing: error rendering, exit codes, the --set option.

Results go to stdout, progress and diagnostics to stderr. A SteerkitError is printed as its rendered
problem list with exit code 2 (invalid input) or 1 (runtime failure); a traceback only with
``--debug`` or STEERKIT_DEBUG=1.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback

import click

from ..errors import SteerkitError


def debug_enabled() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    flag = bool(root and root.obj and root.obj.get("debug"))
    return flag or os.environ.get("STEERKIT_DEBUG", "") not in ("", "0")


def guarded(fn):
    """Wrap a command body: SteerkitError -> rendered message + exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SteerkitError as exc:
            if debug_enabled():
                traceback.print_exc()
            click.echo(exc.render(), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; no partial output was written", err=True)
            sys.exit(130)

    return wrapper


def activation_options(fn):
    """--activations and --spill-dir: where extraction keeps pooled activations (docs/memory.md)."""
    from ..activation_store import MODES

    fn = click.option("--spill-dir", type=click.Path(file_okay=False),
                      help="Folder for spilled activations (default: $STEERKIT_SPILL_DIR or the system "
                           "temp folder); removed after extraction.")(fn)
    return click.option("--activations", type=click.Choice(MODES), default="auto", show_default=True,
                        help="Where extraction keeps pooled activations: memory, disk (one file per layer, "
                             "fitted one layer at a time) or auto (disk above 1 GiB).")(fn)


remote_option = click.option(
    "--remote", metavar="ndif|local|URL",
    help="Run the model on an nnsight remote backend: ndif (nnsight's configured host), a server URL, or local "
         "(nnsight's dry run of that path, weights loaded here). Needs an extracted bundle.")


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a recipe value, validated like the file (e.g. --set steer.strength.lambda=-0.3).")


foreign_option = click.option(
    "--allow-foreign-bundle", "allow_foreign", is_flag=True,
    help="Apply the --bundle even if it was fitted on another model, world, data or fit settings (each "
         "mismatch becomes a warning). Without it such a bundle is refused (exit 2).")
