"""Live self-check of an adapter on a model: every site exists and yields (batch, seq, hidden).

Runs through the nnsight runtime (the same access path steering uses), on one image prompt for
multimodal adapters, and also proves the image-token id occurs in the encoded prompt.
"""

from __future__ import annotations

from .compile import site_ref
from .errors import AdapterError, Problem
from .runtime_nnsight import check_sites


def check_adapter(session) -> list[str]:
    """Return human-readable lines; raise AdapterError listing every failing site."""
    from PIL import Image

    adapter = session.adapter
    hidden, num_layers = session.dims
    image = Image.new("RGB", (32, 32), (120, 30, 200)) if adapter.multimodal else None
    batch = session.encode(["Describe this.", "What is shown here, in one sentence?"], [image, image])
    refs = [site_ref(adapter, s, layer) for s in adapter.sites for layer in sorted({0, num_layers - 1})]
    problems, lines = [], []
    try:
        shapes = check_sites(session.model, batch.inputs, refs)
    except Exception as exc:  # a wrong module path surfaces here as an nnsight/AttributeError
        raise AdapterError(f"adapter '{adapter.name}' does not fit {session.architecture}", [Problem(
            f"reading the sites failed: {type(exc).__name__}: {exc}", None, None, None, "sites",
            "fix the module paths in the adapter file", "SK455")]) from None
    b, t = batch.inputs["input_ids"].shape
    for key, shape in shapes.items():
        ok = len(shape) == 3 and shape[0] == b and shape[2] == hidden
        lines.append(f"{'ok ' if ok else 'BAD'} {key:<16} {shape}")
        if not ok:
            problems.append(Problem(f"site {key} yields shape {shape}, expected ({b}, seq, {hidden})", None, None,
                                    None, "sites", "point the site at a module whose output is the residual "
                                    "stream, or set output_index", "SK456"))
    if adapter.multimodal:
        tid = session.image_token_id
        n = int((batch.inputs["input_ids"] == tid).sum()) if tid is not None else 0
        lines.append(f"{'ok ' if n else 'BAD'} image tokens     {n} of id {tid}")
        if not n:
            problems.append(Problem(f"image token id {tid} does not occur in an image prompt", None, None, None,
                                    "image_token", "fix image_token.config / image_token.tokenizer", "SK457"))
    if problems:
        raise AdapterError(f"adapter '{adapter.name}' failed its live check", problems)
    return lines
