"""The notebook layer: a recipe and its model in one object, steering as a context manager.

    s = sk.load("recipe.yaml")                      # recipe + model
    with s.steered() as m:                          # bundle loaded (or extracted), plan compiled, steering on
        m.generate("Who is this?", image="face.png")

Built on the lower layer (``load_recipe``, ``load_session``, ``get_bundle``, ``plan_for``, ``steer``),
which stays public for scripts that need each step on its own.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union, overload

from PIL import Image

from .recipe import LoadedRecipe, Recipe, load_recipe

if TYPE_CHECKING:
    from .adapter import Adapter
    from .bundle import Bundle
    from .plan import Plan
    from .runtime_nnsight import Steerer
    from .session import ModelSession

ImageLike = Union[Image.Image, str, os.PathLike, None]
RecipeLike = Union[str, os.PathLike, LoadedRecipe, Recipe, "Session"]
DEFAULT_MAX_NEW_TOKENS = 32
BATCH_SIZE = 8


def as_loaded(recipe: RecipeLike, overrides: Optional[list[str] | dict] = None) -> LoadedRecipe:
    """A recipe path, LoadedRecipe, Recipe or Session as a LoadedRecipe (paths are validated)."""
    if isinstance(recipe, Session):
        recipe = recipe.loaded
    if isinstance(recipe, LoadedRecipe):
        return load_recipe(recipe.path, overrides) if overrides and recipe.path else recipe
    if isinstance(recipe, Recipe):
        return LoadedRecipe(recipe, None)
    return load_recipe(Path(recipe), overrides)


def _image(image: ImageLike) -> Optional[Image.Image]:
    if image is None or isinstance(image, Image.Image):
        return image
    with Image.open(Path(image)) as im:  # a path: opened like `apply --image` does
        return im.convert("RGB")


def _batch(prompts: str | Sequence[str], image: ImageLike | Sequence[ImageLike]
           ) -> tuple[list[str], list[Optional[Image.Image]], bool]:
    """(prompts, images, single): one image is shared by every prompt; a list gives one per prompt."""
    single = isinstance(prompts, str)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if isinstance(image, (list, tuple)):
        if len(image) != len(texts):
            raise ValueError(f"{len(texts)} prompts but {len(image)} images: give one image, or one per prompt")
        images = [_image(im) for im in image]
    else:
        images = [_image(image)] * len(texts)  # type: ignore[arg-type]
    return texts, images, single


class Session:
    """A recipe with its model loaded: generate plainly, or steered inside ``with s.steered() as m``.

    The bundle is read from ``bundle.path`` (checked against the model) or, when missing, extracted and
    saved there on first use; the plan is compiled once and cached.
    """

    def __init__(self, loaded: LoadedRecipe, model: ModelSession, *, bundle: Optional[str | Bundle] = None,
                 progress: bool = False):
        self.loaded = loaded
        self.model = model
        self.progress = progress
        self._bundle: Optional[Bundle] = None if bundle is None or isinstance(bundle, (str, os.PathLike)) \
            else bundle
        self._bundle_path = str(bundle) if isinstance(bundle, (str, os.PathLike)) else None
        self._plan: Optional[Plan] = None

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    @property
    def bundle(self) -> Bundle:
        """The recipe's bundle: loaded, or extracted and saved to ``bundle.path`` when it is missing."""
        if self._bundle is None:
            from .pipeline import get_bundle

            self._bundle = get_bundle(self.loaded, self.model, bundle_override=self._bundle_path,
                                      progress=self.progress, log=self._log)
        return self._bundle

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            from .pipeline import plan_for

            self._plan = plan_for(self.loaded, self.model, self.bundle)
        return self._plan

    def _log(self, message: str) -> None:
        if self.progress:
            print(message)

    def extract(self) -> Bundle:
        """Extract a fresh bundle from the recipe (not saved: ``bundle.save(path)``) and use it from now on."""
        from .extraction import extract

        self._bundle, self._plan = extract(self.loaded, self.model, progress=self.progress), None
        return self._bundle

    @overload  # a str is also a Sequence[str]: the first overload wins, as at run time
    def generate(self, prompts: str, image: ImageLike = ..., *,  # type: ignore[overload-overlap]
                 max_new_tokens: int = ...) -> str: ...
    @overload
    def generate(self, prompts: Sequence[str], image: ImageLike | Sequence[ImageLike] = ..., *,
                 max_new_tokens: int = ...) -> list[str]: ...

    def generate(self, prompts: str | Sequence[str], image: ImageLike | Sequence[ImageLike] = None, *,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> str | list[str]:
        """The unsteered greedy answer (a list for a list of prompts)."""
        return _generate(self.model, None, prompts, image, max_new_tokens)

    @contextlib.contextmanager
    def steered(self) -> Iterator[Steered]:
        """Steering on for the block; the model is left exactly as it was on exit."""
        from .runtime_nnsight import steer

        plan = self.plan
        with steer(self.model.model, plan, self.model.image_token_id, remote=self.model.remote) as steerer:
            yield Steered(self, steerer)

    def __repr__(self) -> str:
        return f"Session(recipe={self.recipe.name!r}, model={self.model.model_id!r})"


class Steered:
    """The model with the recipe's steering on (from ``Session.steered()``)."""

    def __init__(self, session: Session, steerer: Steerer):
        self.session = session
        self.steerer = steerer

    @overload  # a str is also a Sequence[str]: the first overload wins, as at run time
    def generate(self, prompts: str, image: ImageLike = ..., *,  # type: ignore[overload-overlap]
                 max_new_tokens: int = ...) -> str: ...
    @overload
    def generate(self, prompts: Sequence[str], image: ImageLike | Sequence[ImageLike] = ..., *,
                 max_new_tokens: int = ...) -> list[str]: ...

    def generate(self, prompts: str | Sequence[str], image: ImageLike | Sequence[ImageLike] = None, *,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> str | list[str]:
        """The steered greedy answer (a list for a list of prompts)."""
        return _generate(self.session.model, self.steerer, prompts, image, max_new_tokens)

    @overload
    def gate(self, prompts: str, image: ImageLike = ...) -> float: ...  # type: ignore[overload-overlap]
    @overload
    def gate(self, prompts: Sequence[str], image: ImageLike | Sequence[ImageLike] = ...) -> list[float]: ...

    def gate(self, prompts: str | Sequence[str], image: ImageLike | Sequence[ImageLike] = None
             ) -> float | list[float]:
        """How far the gate opens for each prompt (0 closed, 1 fully steered)."""
        texts, images, single = _batch(prompts, image)
        values: list[float] = []
        for s in range(0, len(texts), BATCH_SIZE):
            inputs = self.session.model.encode(texts[s:s + BATCH_SIZE], images[s:s + BATCH_SIZE]).inputs
            first = next(iter(self.steerer.gate_values(inputs).values()))
            values += [float(v) for v in first]
        return values[0] if single else values

    @overload
    def compare(self, prompts: str, image: ImageLike = ..., *,  # type: ignore[overload-overlap]
                max_new_tokens: int = ...) -> dict: ...
    @overload
    def compare(self, prompts: Sequence[str], image: ImageLike | Sequence[ImageLike] = ..., *,
                max_new_tokens: int = ...) -> list[dict]: ...

    def compare(self, prompts: str | Sequence[str], image: ImageLike | Sequence[ImageLike] = None, *,
                max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict | list[dict]:
        """``{prompt, unsteered, steered, gate}`` per prompt: the answers side by side."""
        texts, images, single = _batch(prompts, image)
        steered = self.generate(texts, images, max_new_tokens=max_new_tokens)
        plain = self.session.generate(texts, images, max_new_tokens=max_new_tokens)
        gates = self.gate(texts, images)
        rows = [{"prompt": p, "unsteered": u, "steered": s, "gate": round(g, 4)}
                for p, u, s, g in zip(texts, plain, steered, gates)]
        return rows[0] if single else rows


def _generate(model: ModelSession, steerer: Optional[Steerer], prompts: str | Sequence[str],
              image: ImageLike | Sequence[ImageLike], max_new_tokens: int) -> str | list[str]:
    texts, images, single = _batch(prompts, image)
    out: list[str] = []
    for s in range(0, len(texts), BATCH_SIZE):
        out += model.generate(texts[s:s + BATCH_SIZE], images[s:s + BATCH_SIZE], max_new_tokens, steerer=steerer)
    return out[0] if single else out


def load(recipe: RecipeLike, overrides: Optional[list[str] | dict] = None, *, bundle: Optional[str | Bundle] = None,
         remote: Optional[str] = None, progress: bool = False) -> Session:
    """Validate a recipe and load its model: ``sk.load("recipe.yaml", ["steer.strength.lambda=-2"])``.

    ``bundle``: a bundle (or its path / ``hf://`` reference) to use instead of the recipe's
    ``bundle.path``; ``remote``: as ``--remote`` (``ndif``, a URL, or ``local``)."""
    from .remote import open_session

    loaded = as_loaded(recipe, overrides)
    return Session(loaded, open_session(loaded, remote), bundle=bundle, progress=progress)


def extract(recipe: RecipeLike, session: Optional[ModelSession] = None, *, progress: bool = False,
            activations: str = "auto", spill_dir: Optional[str] = None) -> Bundle:
    """Extract a recipe's bundle (returned, not saved: ``bundle.save(path)``).

    ``recipe``: a path, LoadedRecipe, Recipe or a loaded ``Session``; the model is loaded when no
    ``session`` (a ``ModelSession``) is given. ``activations``/``spill_dir``: see
    ``steerkit.extraction.extract``."""
    from .extraction import extract as extract_bundle
    from .remote import open_session

    if isinstance(recipe, Session) and session is None:
        session = recipe.model
    loaded = as_loaded(recipe)
    model = session if session is not None else open_session(loaded)
    return extract_bundle(loaded, model, progress=progress, activations=activations, spill_dir=spill_dir)


def compile_recipe(recipe: RecipeLike, bundle: Optional[Bundle] = None, adapter: Optional[Adapter] = None, *,
                   dims: Optional[tuple[int, int]] = None, architecture: Optional[str] = None) -> Plan:
    """A recipe's plan: ``sk.compile_recipe("recipe.yaml", bundle)``.

    The adapter and the model's dimensions come from the bundle (or, without one, from the recipe's
    model config, as ``steerkit validate`` reads them); a ``Session`` compiles against its model. Without
    a bundle the plan is a dry run (no vectors). ``steerkit.compile.compile_recipe`` is the pure lower
    layer that takes the adapter and dimensions explicitly."""
    from .adapter import Adapter as _Adapter
    from .adapter import get_adapter
    from .compile import compile_recipe as compile_plan
    from .pipeline import _config_json, _dims, plan_for, resolve_adapter

    if isinstance(bundle, _Adapter):  # the lower layer's order: compile_recipe(recipe, adapter, bundle)
        bundle, adapter = adapter, bundle
    if isinstance(recipe, Session):
        return plan_for(recipe.loaded, recipe.model, bundle if bundle is not None else recipe.bundle)
    loaded = as_loaded(recipe)
    if bundle is not None:
        m = bundle.manifest
        adapter = adapter or get_adapter(m.adapter.name)
        dims = dims or (m.hidden_size, m.num_layers)
        architecture = architecture or m.architecture
    elif adapter is None or dims is None:
        config = _config_json(loaded)
        adapter = adapter or resolve_adapter(loaded, config)
        dims = dims or _dims(adapter, config, loaded)
        architecture = architecture or (config or {}).get("architectures", [None])[0]
    return compile_plan(loaded.recipe, adapter, bundle, dims=dims, architecture=architecture)
