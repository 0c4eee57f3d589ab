"""Live self-check of an adapter on a model: every site exists and yields (batch, seq, hidden).

Runs through the nnsight runtime (the same access path steering uses), on two image prompts for
multimodal adapters, and proves three more things a recipe author relies on:

- the image token: its positions in a processed prompt are exactly as many as the image features
  the vision tower produces (a token that merely occurs, such as a vision-start marker, fails);
- the residual stream is continuous: ``resid_post[l] == resid_pre[l+1]`` on every layer, or the
  layers where something is injected between decoder blocks (Qwen3-VL's DeepStack adds visual
  features to image rows) are reported, so authors know a write at ``resid_post[l]`` is not the
  whole input of layer l+1 there;
- the processor fits the checkpoint (a wrong processor setting is an adapter error, not a traceback).
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch

from .compile import site_ref
from .errors import AdapterError, Problem
from .runtime_nnsight import check_sites, site_values


def check_adapter(session) -> list[str]:
    """Return human-readable lines; raise AdapterError listing every failing check."""
    from PIL import Image

    adapter = session.adapter
    hidden, num_layers = session.dims
    image = Image.new("RGB", (32, 32), (120, 30, 200)) if adapter.multimodal else None
    try:
        batch = session.encode(["Describe this.", "What is shown here, in one sentence?"], [image, image])
    except Exception as exc:  # noqa: BLE001 - a processor that does not fit fails in many ways
        raise AdapterError(f"adapter '{adapter.name}' does not fit {session.architecture}", [Problem(
            f"encoding an image prompt failed: {type(exc).__name__}: {_first_line(exc)}", None, None, None,
            "processor", "fix the adapter's processor and prompt settings (docs/adapters.md, 'Processor "
            "settings')", "SK458")]) from None
    refs, lines = _present_refs(session.model, adapter, num_layers)
    problems: list[Problem] = []
    try:
        shapes = check_sites(session.model, batch.inputs, refs)
    except Exception as exc:  # a wrong module path surfaces here as an nnsight/AttributeError
        raise AdapterError(f"adapter '{adapter.name}' does not fit {session.architecture}", [Problem(
            f"reading the sites failed: {type(exc).__name__}: {_first_line(exc)}", None, None, None, "sites",
            "fix the module paths in the adapter file", "SK455")]) from None
    b, t = batch.inputs["input_ids"].shape
    for key, shape in shapes.items():
        ok = len(shape) == 3 and shape[0] == b and shape[2] == hidden
        lines.append(f"{'ok ' if ok else 'BAD'} {key:<16} {shape}")
        if not ok:
            problems.append(Problem(f"site {key} yields shape {shape}, expected ({b}, seq, {hidden})", None, None,
                                    None, "sites", "point the site at a module whose output is the residual "
                                    "stream, or set output_index", "SK456"))
    if not problems:
        lines += continuity_lines(session, batch.inputs, num_layers)
    if adapter.multimodal:
        lines += _image_token_lines(session, batch.inputs, hidden, problems)
    if problems:
        raise AdapterError(f"adapter '{adapter.name}' failed its live check", problems)
    return lines


def _present_refs(model, adapter, num_layers: int) -> tuple[list, list[str]]:
    """Refs at the first and last layer, without modules a layer lacks by design (Mllama's cross-attention
    layers have no self_attn), as long as the site exists on one of them; a note names each one skipped."""
    refs, notes = [], []
    for site in adapter.sites:
        found = []
        for layer in sorted({0, num_layers - 1}):
            try:
                model.get_submodule(adapter.module_path(site, layer))
            except (AttributeError, TypeError):
                notes.append(f"--  {site}[{layer}]".ljust(21) + f" no module {adapter.module_path(site, layer)} "
                             "on this layer (skipped)")
                continue
            found.append(site_ref(adapter, site, layer))
        # a site missing everywhere is read anyway, so the failure names it (SK455)
        refs += found or [site_ref(adapter, site, layer) for layer in sorted({0, num_layers - 1})]
    return refs, notes


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def _image_token_lines(session, inputs: dict, hidden: int, problems: list[Problem]) -> list[str]:
    tid = session.image_token_id
    n = int((inputs["input_ids"] == tid).sum()) if tid is not None else 0
    if not n:
        problems.append(Problem(f"image token id {tid} does not occur in an image prompt", None, None, None,
                                "image_token", "fix image_token.config / image_token.tokenizer", "SK457"))
        return [f"BAD image tokens     0 of id {tid}"]
    features = image_feature_count(session.model, inputs, hidden)
    if features is None:  # cross-attention families (Mllama) feed the image beside the tokens, not into them
        return [f"ok  image tokens     {n} of id {tid} (no get_image_features: feature count not compared)"]
    ok = features == n
    if not ok:
        problems.append(Problem(
            f"an image prompt has {n} positions of token id {tid}, but the vision tower produces {features} image "
            "features", None, None, None, "image_token", "point image_token at the token the processor repeats "
            "once per image feature (for Qwen-VL: image_token_id, not vision_start_token_id)", "SK457"))
    return [f"{'ok ' if ok else 'BAD'} image tokens     {n} of id {tid}, {features} image features"]


def image_feature_count(model: torch.nn.Module, inputs: dict, hidden: int) -> Optional[int]:
    """How many image feature vectors of width ``hidden`` the model computes for ``inputs`` (None when the
    model has no ``get_image_features``, as cross-attention families do not merge features into tokens)."""
    inner = getattr(model, "model", model)
    fn = getattr(inner, "get_image_features", None) or getattr(model, "get_image_features", None)
    if fn is None:
        return None
    params = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in inputs.items() if k in params}
    if "pixel_values" in params and "pixel_values" not in kwargs:
        return None
    with torch.no_grad():
        out = fn(**kwargs)
    pooled = getattr(out, "pooler_output", None)
    feats = pooled if pooled is not None else (out[0] if isinstance(out, tuple) and not torch.is_tensor(out) else out)
    return sum(_rows(t, hidden) for t in (feats if isinstance(feats, (list, tuple)) else [feats]))


def _rows(t: Any, hidden: int) -> int:
    if isinstance(t, (list, tuple)):
        return sum(_rows(x, hidden) for x in t)
    return int(t.numel() // hidden) if torch.is_tensor(t) and t.shape[-1] == hidden else 0


def continuity_lines(session, inputs: dict, num_layers: int) -> list[str]:
    """One line: the residual stream is continuous between blocks, or where it is not (and on which rows)."""
    adapter = session.adapter
    refs = [site_ref(adapter, "resid_post", layer) for layer in range(num_layers - 1)]
    refs += [site_ref(adapter, "resid_pre", layer) for layer in range(1, num_layers)]
    values = site_values(session.model, inputs, refs)
    tid = session.image_token_id
    image_rows = (inputs["input_ids"] == tid).cpu() if tid is not None else None
    jumps = []
    for layer in range(num_layers - 1):
        post, pre = values[f"resid_post[{layer}]"], values[f"resid_pre[{layer + 1}]"]
        if post.shape != pre.shape:
            jumps.append(f"{layer}->{layer + 1} (shapes differ)")
            continue
        moved = (post != pre).any(-1)
        if moved.any():
            where = "image-token rows only" if image_rows is not None and not (moved & ~image_rows).any() \
                else f"{int(moved.sum())} rows"
            jumps.append(f"{layer}->{layer + 1} ({where})")
    if not jumps:
        return [f"ok  residual stream  resid_post[l] == resid_pre[l+1] for every l < {num_layers - 1}"]
    return [f"note residual stream  resid_post[l] != resid_pre[l+1] at {', '.join(jumps)}: something is added "
            "between these blocks (e.g. DeepStack visual features); a write at resid_post[l] is not the whole "
            "input of layer l+1 there, write at resid_pre[l+1] to steer what it reads"]
