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

import errno
import os
import re
import stat
from pathlib import Path
from typing import Optional

from .errors import BundleError, Problem

HUB_PREFIX = "hf://"
PATH_MAX, NAME_MAX = 4095, 255  # bytes, as Linux and macOS count them: longer paths fail with ENAMETOOLONG
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


def path_text_problem(spec: str) -> Optional[str]:
    """Why a path string cannot name a file at all (NUL byte, over-long, not encodable), or None.

    Asked before the filesystem is, so such a path is an input error rather than an OSError traceback
    (5,000 characters) or a silently "missing" file (a NUL byte: pathlib answers False, issue #14)."""
    if "\0" in spec:
        return "contains a NUL byte"
    try:
        raw = os.fsencode(spec)
    except UnicodeEncodeError:
        return "is not encodable as a file name (a lone surrogate?)"
    if len(raw) > PATH_MAX:
        return f"is {len(raw)} bytes long; paths are limited to {PATH_MAX}"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return f"has a {len(longest)}-byte name; names are limited to {NAME_MAX}"
    return None


def check_spec(spec: str, key: str) -> None:
    """Raise a BundleError when ``spec`` (a ``--bundle``/``-o`` value or ``bundle.path``) cannot be a path."""
    why = path_text_problem(spec)
    if why:
        shown = spec if len(spec) <= 60 else spec[:57] + "..."
        raise BundleError(f"unusable bundle path {shown!r}", [Problem(
            f"the bundle path {why}", None, None, None, key, "give the path of a bundle file", "SK430")])


def _unreadable(path: Path, key: str, msg: str, hint: str, code: str = "SK431") -> BundleError:
    return BundleError(f"cannot read bundle {path}", [Problem(msg, str(path), None, None, key, hint, code)])


def local_bundle(path: Path, key: str = "bundle.path", *, must_exist: bool = False, for_writing: bool = False
                 ) -> Path:
    """A local bundle reference made concrete: folders resolve to the bundle file they hold.

    ``must_exist`` (an explicit ``--bundle``): a path that does not exist, a dangling symlink, a symlink
    loop or a folder without a bundle is an error, never "missing, so extract one" (#18). Without it a
    missing path is returned for extract to write, but a broken symlink is still an error."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise _unreadable(path, key, "the path is a symlink to nothing (dangling)",
                              "fix or remove the symlink") from None
        if must_exist:
            raise _unreadable(path, key, "no such file or folder",
                              "check the path, or leave --bundle out to use (or extract) the recipe's "
                              "bundle.path") from None
        return path
    except OSError as e:
        why = "the path is a symlink loop" if e.errno == errno.ELOOP else f"cannot look at it: {e.strerror or e}"
        raise _unreadable(path, key, why, "check the path and its symlinks") from None
    if not stat.S_ISDIR(st.st_mode):
        return path
    if for_writing:
        return path / DEFAULT_FILE
    found = in_folder(path)
    if must_exist and not found.is_file():
        raise _unreadable(path, key, "the folder holds no bundle (it is empty)",
                          f"point at a bundle file or a folder holding one (e.g. {path / DEFAULT_FILE})")
    return found
