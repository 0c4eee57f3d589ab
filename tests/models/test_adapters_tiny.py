"""Ground truth for every adapter file: its paths and keys, checked on a tiny model with plain torch hooks.

For each architecture an adapter in adapters/ serves, on the tiny random model of that architecture:
every site module exists for every layer; the io side yields a [batch, seq, hidden] tensor (a tuple
exactly when ``output_index`` is set); the sites mean the same thing on every family
(resid_post == resid_pre + attn_out + mlp_out, resid_pre[l+1] == resid_post[l] except on image rows
of families that inject features between blocks); the config keys give the model's real dimensions;
the loader names an Auto class that owns the architecture; and the image token id from the config
marks exactly as many positions as the vision tower has features, also when the prompt comes from
the adapter's fallback ``format``. No nnsight: this is the reference the live ``steerkit adapters
check`` must agree with.

The tiny model is the zoo's hand-written builder for the eleven first families, and for every other
adapter the generic builder reading the adapter's own ``tiny:`` section, so a new family needs no
Python here either.
"""

from __future__ import annotations

import pytest
import torch

from steerkit.adapter import STANDARD_SITES, Adapter, load_adapter_file
from steerkit.resources import builtin_dir
from steerkit.testing.fixtures import tiny as cached_tiny  # lru-cached build_tiny(name, std=0.1)

# architecture -> tiny model name (test_tiny_map_is_true checks each entry against the built model)
TINY_FOR_ARCH = {
    "LlavaForConditionalGeneration": "llava", "LlavaNextForConditionalGeneration": "llava_next",
    "Qwen2VLForConditionalGeneration": "qwen2_vl", "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Idefics3ForConditionalGeneration": "idefics3", "SmolVLMForConditionalGeneration": "smolvlm",
    "Gemma3ForConditionalGeneration": "gemma3", "PaliGemmaForConditionalGeneration": "paligemma",
    "MllamaForConditionalGeneration": "mllama", "LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
}
# Families that also put a learned constant on some image-token rows (LLaVA-NeXT's image_newline).
CONSTANT_IMAGE_ROWS = {"llava_next", "llava_onevision"}
# Sites that by design do not exist on some layers: (adapter, site) -> config key listing those layers.
# Mllama's cross-attention layers have cross_attn instead of self_attn.
LAYER_GAPS = {("mllama", "attn_out"): "text_config.cross_attention_layers"}

ADAPTER_FILES = sorted(builtin_dir("adapters").glob("*.yaml"))
CASES = [(path, arch) for path in ADAPTER_FILES for arch in load_adapter_file(path).match.architectures]


def test_adapters_cover_every_family():
    archs = {arch for _, arch in CASES}
    assert len(ADAPTER_FILES) >= 15 and len(archs) >= 16, sorted(archs)
    assert set(TINY_FOR_ARCH) <= archs, sorted(set(TINY_FOR_ARCH) - archs)
    for path in ADAPTER_FILES:  # file name = HF model_type = adapter name
        assert load_adapter_file(path).name == path.stem


@pytest.mark.parametrize("arch", sorted(TINY_FOR_ARCH))
def test_tiny_map_is_true(arch):
    assert cached_tiny(TINY_FOR_ARCH[arch]).model.config.architectures == [arch]


def _gap_layers(adapter: Adapter, site: str, config) -> set[int]:
    key = LAYER_GAPS.get((adapter.name, site))
    return set(adapter.config_value(config, key)) if key else set()


def _capture(model, adapter: Adapter, n_layers: int, enc: dict) -> dict[tuple[str, int], dict]:
    """Run one forward with a hook on every (site, layer); record what the io side carried."""
    seen: dict[tuple[str, int], dict] = {}
    handles = []

    def hook(key, spec):
        def fn(module, args, kwargs, output):
            if spec.io == "input":
                value, positional = (args[0], True) if args else (next(iter(kwargs.values()), None), False)
                seen[key] = {"value": value, "positional": positional}
            else:
                seen[key] = {"raw": output}
        return fn

    for site, spec in adapter.sites.items():
        for layer in range(n_layers):
            if layer in _gap_layers(adapter, site, model.config):
                continue
            module = model.get_submodule(adapter.module_path(site, layer))
            handles.append(module.register_forward_hook(hook((site, layer), spec), with_kwargs=True))
    try:
        with torch.no_grad():
            model(**enc)
    finally:
        for h in handles:
            h.remove()
    return seen


def _capture_one(model, module_path: str, enc: dict) -> torch.Tensor:
    """The first positional input of one module (the decoder input before any mixing)."""
    got = []
    handle = model.get_submodule(module_path).register_forward_pre_hook(lambda m, args: got.append(args[0]))
    try:
        with torch.no_grad():
            model(**enc)
    finally:
        handle.remove()
    return got[0]


def tiny_for(adapter: Adapter, arch: str):
    """The hand-written tiny model of ``arch``, else the one built from the adapter's tiny: section."""
    if arch in TINY_FOR_ARCH:
        return cached_tiny(TINY_FOR_ARCH[arch])
    assert adapter.tiny is not None, (
        f"adapter '{adapter.name}' serves {arch} but has no tiny: section, so no tiny model of it can be built "
        "(add one: docs/adapters.md, step 4)")
    tiny = cached_tiny(adapter.name)
    assert tiny.model.config.architectures == [arch]
    return tiny


@pytest.mark.parametrize("path,arch", CASES, ids=[f"{p.stem}-{a}" for p, a in CASES])
def test_adapter_on_tiny_model(path, arch):
    adapter = load_adapter_file(path)
    tiny = tiny_for(adapter, arch)
    model, config = tiny.model, tiny.model.config
    assert set(STANDARD_SITES) <= set(adapter.sites)

    # config keys resolve to the model's real dimensions
    hidden, n_layers = adapter.dims(config)
    layers_path = adapter.sites["resid_post"].module.rsplit(".{layer}", 1)[0]
    assert len(model.get_submodule(layers_path)) == n_layers
    assert model.get_output_embeddings().out_features == adapter.config_value(config, adapter.config.vocab_size)

    # the loader's Auto class owns this architecture
    from transformers.models.auto import modeling_auto as ma

    mapping = (ma.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES if adapter.loader == "image_text_to_text"
               else ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert mapping.get(config.model_type) == arch

    # every site on every layer: exists, right io side, [batch, seq, hidden], tuple exactly when indexed
    for site, layer in [(s, lay) for s in adapter.sites for lay in _gap_layers(adapter, s, config)]:
        with pytest.raises(AttributeError):
            model.get_submodule(adapter.module_path(site, layer))
    enc = tiny.inputs(["What is in this image?", "Describe the picture in one sentence."], image=adapter.multimodal)
    batch, seq = enc["input_ids"].shape
    seen = _capture(model, adapter, n_layers, enc)
    acts: dict[tuple[str, int], torch.Tensor] = {}
    for (site, layer), rec in seen.items():
        spec = adapter.sites[site]
        where = f"{site} layer {layer} ({adapter.module_path(site, layer)} {spec.io})"
        if spec.io == "input":
            assert rec["positional"], f"{where}: hidden states not passed positionally"
            value = rec["value"]
        elif spec.output_index is not None:
            assert isinstance(rec["raw"], tuple), f"{where}: output_index set but output is {type(rec['raw'])}"
            value = rec["raw"][spec.output_index]
        else:
            assert isinstance(rec["raw"], torch.Tensor), f"{where}: a {type(rec['raw'])}; set output_index"
            value = rec["raw"]
        assert isinstance(value, torch.Tensor) and tuple(value.shape) == (batch, seq, hidden), where
        acts[site, layer] = value
    expected = {(s, lay) for s in adapter.sites for lay in range(n_layers)
                if lay not in _gap_layers(adapter, s, config)}
    assert set(acts) == expected, f"hooks never fired on {sorted(expected - set(acts))}"

    # the sites mean the same thing on every family: what each branch adds to the residual stream
    for layer in range(n_layers):
        if all((s, layer) in acts for s in STANDARD_SITES):
            total = acts["resid_pre", layer] + acts["attn_out", layer] + acts["mlp_out", layer]
            torch.testing.assert_close(total, acts["resid_post", layer], atol=1e-5, rtol=1e-5)
        if layer + 1 < n_layers:  # continuous, except where a family injects image features (DeepStack)
            jump = (acts["resid_pre", layer + 1] != acts["resid_post", layer]).any(-1)
            image_rows = enc["input_ids"] == adapter.image_token_id(config, tiny.tokenizer) \
                if adapter.multimodal else torch.zeros_like(jump)
            assert not (jump & ~image_rows).any(), f"resid_pre[{layer + 1}] != resid_post[{layer}] off image rows"

    # image token: from the config key, present in image prompts, also via the fallback format
    if not adapter.multimodal:
        assert tiny.processor is None and adapter.image_token_id(config, tiny.tokenizer) is None
        return
    image_id = adapter.image_token_id(config, tiny.tokenizer)
    assert image_id is not None and (enc["input_ids"] == image_id).sum(-1).min() >= 1
    from steerkit.adapter_check import image_feature_count

    features = image_feature_count(model, enc, hidden)  # None: cross-attention (the image is not in the tokens)
    assert features is None or features == int((enc["input_ids"] == image_id).sum())
    # ... and marks exactly the positions whose decoder input carries the image (they change with the image)
    first = adapter.module_path("resid_pre", 0)
    one, other = (tiny.inputs("What is in this image?", seed=s) for s in (0, 100))
    torch.testing.assert_close(one["input_ids"], other["input_ids"], atol=0, rtol=0)
    diff = (_capture_one(model, first, one) - _capture_one(model, first, other)).abs().amax(-1)[0] > 0
    marked = one["input_ids"][0] == image_id
    if features is None:  # cross-attention: the image token is a lone placeholder per image
        assert not diff.any() and int(marked.sum()) == 1
    elif adapter.name in CONSTANT_IMAGE_ROWS:
        assert diff.any() and not (diff & ~marked).any()
    else:
        assert torch.equal(diff, marked), f"image rows {diff.nonzero().flatten().tolist()}, " \
            f"token {image_id} at {marked.nonzero().flatten().tolist()}"
    spec = adapter.prompt
    text = spec.format.replace("{image}", spec.image_placeholder).replace("{text}", "What is in this image?")
    from steerkit.models.zoo import tiny_image

    fallback = tiny.processor(images=[[tiny_image(0)]], text=[text], return_tensors="pt")
    assert (fallback["input_ids"] == image_id).sum() == (enc["input_ids"][:1] == image_id).sum()
