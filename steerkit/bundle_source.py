"""Where a bundle comes from: a local file, a folder laid out like a Hub repository, or a Hub repository.

``bundle.path`` (and ``--bundle``) accept
- ``runs/x/bundle.safetensors``: a local file (relative paths resolve against the recipe's folder);
- ``shared/erase-alice/``: a folder, e.g. a downloaded or cloned Hub repository; the bundle is its
  ``bundle.safetensors``, else its only ``*.safetensors`` file (extract writes ``bundle.safetensors``
  into an empty or new folder; a folder with other files and no bundle is an error, not a target);
- ``hf://OWNER/REPO[@REVISION][/FILE]``: a file of a Hub model repository, fetched with
  ``huggingface_hub`` into its cache (``HF_HUB_OFFLINE=1`` reads the cache only). FILE defaults to
  ``bundle.safetensors``.
A fetched bundle is verified against its manifest like any other (``Bundle.load``); nothing in it runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .errors import BundleError, Problem

HUB_PREFIX = "hf://"
DEFAULT_FILE = "bundle.safetensors"
_HUB = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+?))?(?:/(?P<file>[\w./-]+))?$")


def is_hub(spec: str) -> bool:
    return spec.startswith(HUB_PREFIX)


def parse_hub(spec: str) -> tuple[str, Optional[str], str]:
    """'hf://org/repo@v1/dir/b.safetensors' -> ('org/repo', 'v1', 'dir/b.safetensors')."""
    m = _HUB.match(spec)
    if m is None or ".." in spec.split("/"):
        raise BundleError(f"bad Hub bundle reference {spec!r}", [Problem(
            f"cannot read {spec!r} as hf://OWNER/REPO[@REVISION][/FILE]", spec, None, None, "bundle.path",
            "e.g. hf://my-org/erase-alice@v1/bundle.safetensors", "SK420")])
    return m.group("repo"), m.group("rev"), m.group("file") or DEFAULT_FILE


def fetch_hub(spec: str) -> Path:
    """Download (or read from the local Hub cache) the bundle file a hf:// reference names."""
    repo, rev, filename = parse_hub(spec)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, filename, revision=rev))
    except Exception as e:  # network, auth, missing file, offline cache miss: one clear error
        raise BundleError(f"cannot fetch bundle {spec}", [Problem(
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", spec, None, None, "bundle.path",
            "check the repository id, revision and file name, and your network or HF_TOKEN; with "
            "HF_HUB_OFFLINE=1 the file must already be in the Hub cache", "SK421")]) from None


def in_folder(folder: Path) -> Path:
    """The bundle file inside a Hub-like folder (``bundle.safetensors`` in an empty one, for extract)."""
    if (folder / DEFAULT_FILE).is_file():
        return folder / DEFAULT_FILE
    found = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        others = sorted(p.name for p in folder.iterdir())
        if not others:
            return folder / DEFAULT_FILE  # an empty folder: where extract will write the bundle
        raise BundleError(f"no bundle in {folder}", [Problem(
            f"the folder holds no .safetensors file, only {', '.join(others[:5])}"
            f"{' ...' if len(others) > 5 else ''}", str(folder), None, None, "bundle.path",
            f"point bundle.path at a bundle file or a folder holding one (e.g. {folder / DEFAULT_FILE}), or "
            "at an empty folder for extract to write into", "SK422")])
    raise BundleError(f"cannot pick a bundle in {folder}", [Problem(
        f"the folder holds {len(found)} .safetensors files: {', '.join(p.name for p in found[:5])}", str(folder),
        None, None, "bundle.path", f"name the file (e.g. {found[0]}) or keep one bundle, ideally named "
        f"{DEFAULT_FILE}", "SK422")])


def local_bundle(path: Path) -> Path:
    """A local bundle reference made concrete: folders resolve to the bundle file they hold."""
    return in_folder(path) if path.is_dir() else path
