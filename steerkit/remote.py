"""Sessions whose model runs on an nnsight remote backend (NDIF), or nnsight's dry run of that path.

``--remote ndif`` (or a server URL): the weights stay on the server. Only the config, tokenizer and
processor are loaded here, the model is an nnsight ``TransformersModel`` on the meta device, and every
trace (steered or not) is sent as a request. NDIF hosts Hub models, so the recipe's ``model.id`` must be
a Hub id. ``--remote local``: the weights are loaded here and every trace goes through nnsight's
serialise / deserialise rehearsal of the remote path (``remote="local"``), which is how this path is
tested offline.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

from .adapter import Adapter, adapter_for_architecture
from .errors import Problem, RecipeError
from .session import ModelSession, architecture_of, resolve_model_ref


def remote_flag(value: str) -> bool | str:
    """The ``remote=`` nnsight takes for a --remote value: ndif -> True, local -> "local", URL -> URL."""
    if value == "ndif":
        return True
    if value == "local" or value.startswith(("http://", "https://")):
        return value
    raise RecipeError("invalid --remote", [Problem(
        f"--remote must be ndif, local or a server URL; got {value!r}", None, None, None, "--remote",
        "use --remote ndif (the host in nnsight's config), --remote https://HOST, or --remote local", "SK770")])


def open_session(loaded: Any, remote: Optional[str] = None) -> ModelSession:
    """The recipe's model: loaded here, or (``remote`` = a --remote value) run through nnsight's remote path."""
    if remote is None:
        from .session import load_session

        return load_session(loaded.recipe.model, loaded.base_dir)
    return load_remote_session(loaded.recipe.model, loaded.base_dir, remote_flag(remote))


def load_remote_session(spec: Any, base_dir: Optional[Path], remote: bool | str) -> ModelSession:
    from nnsight.modeling.transformers import TransformersModel

    from .models.loading import load_preprocessors
    from .session import adapter_choice, load_session

    adapter: Optional[Adapter]
    if remote == "local":  # the weights here (with the recipe's dtype and device_map), every trace rehearsed
        local = load_session(spec, base_dir)
        source: Any = local.model
        processor, tokenizer, adapter = local.processor, local.tokenizer, local.adapter
    else:
        # an embedded id is refused before resolve_model_ref would train the model
        if spec.id.startswith("embedded:") or Path(resolve_model_ref(spec, base_dir)).exists():
            raise RecipeError("a remote server cannot run a local model", [Problem(
                f"model.id '{spec.id}' is a local or embedded model; NDIF runs models from the Hub",
                None, None, None, "model.id", "set model.id to the model's Hub id, or use --remote local",
                "SK771")])
        adapter, kind, loader = adapter_choice(spec, base_dir)
        processor, tokenizer = load_preprocessors(spec.id, revision=spec.revision, processor_kind=kind,
                                                     trust_remote_code=spec.trust_remote_code, loader=loader)
        source = spec.id
    task = "image-text-to-text" if processor is not None else "text-generation"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' pipeline notes on models it does not list for a task
        nn_model = TransformersModel(source, revision=spec.revision, processor=processor, tokenizer=tokenizer,
                                     task=task)
    adapter = adapter or adapter_for_architecture(architecture_of(nn_model))
    return ModelSession(nn_model, processor, tokenizer, adapter, spec.id, spec.revision, remote)
