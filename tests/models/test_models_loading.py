"""load_pretrained: the Hub-id / local-folder path, round-tripped through save_tiny, and its user errors."""

from __future__ import annotations

import pytest
import torch

from steerkit.errors import AdapterError, DataError, RecipeError, SteerkitError
from steerkit.models.loading import architecture_of, load_pretrained
from steerkit.models.zoo import TINY_NAMES, TinyModel, generic_tiny_names, save_tiny
from steerkit.testing.fixtures import tiny as cached_tiny

LOADER = {"llama": "causal_lm", "qwen2": "causal_lm"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> checkpoint folder, written on first use."""
    root, done = tmp_path_factory.mktemp("ckpt"), {}

    def get(name: str):
        if name not in done:
            done[name] = save_tiny(cached_tiny(name), root / name)
        return done[name]
    return get


@pytest.mark.parametrize("name", TINY_NAMES + generic_tiny_names())
def test_round_trip_gives_identical_logits_and_inputs(name, saved):
    """Families built from their adapter alone load back through the adapter's processor recipe (loader=None)."""
    original = cached_tiny(name)
    loader = None if name in generic_tiny_names() else LOADER.get(name, "image_text_to_text")
    model, processor, tokenizer = load_pretrained(saved(name), loader=loader)
    assert not model.training and type(model) is type(original.model)
    assert (processor is None) == (original.processor is None)
    if processor is not None:
        assert tokenizer is processor.tokenizer
    loaded = TinyModel(model, processor, tokenizer, name)
    texts = ["What is in this image?", "Describe the picture in one sentence."]
    enc, enc2 = original.inputs(texts), loaded.inputs(texts)
    assert enc.keys() == enc2.keys()
    for key in enc:
        torch.testing.assert_close(enc[key], enc2[key], atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(**enc).logits, original.model(**enc).logits, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["llava", "qwen2_5_vl", "smolvlm", "llama"])
def test_auto_loader_picks_the_adapters_loader(name, saved):
    model, processor, _ = load_pretrained(saved(name), loader=None)
    assert architecture_of(model) == architecture_of(cached_tiny(name).model)
    assert (processor is None) == (name == "llama")


def test_adapter_processor_kind_is_honoured(saved):
    _, processor, _ = load_pretrained(saved("qwen2_5_vl"), processor_kind="qwen2_5_vl_no_video")
    assert type(processor).__name__ == "Qwen25VLNoVideoProcessor"
    _, processor, tokenizer = load_pretrained(saved("llava"), processor_kind="tokenizer")
    assert processor is None and tokenizer.image_token == "<image>"


def test_dtype_and_trust_remote_code_are_passed_through(saved, monkeypatch):
    import transformers

    seen = {}
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    model, _, _ = load_pretrained(saved("llama"), loader="causal_lm", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and seen["trust_remote_code"] is False
    load_pretrained(saved("llama"), loader="causal_lm", dtype=torch.float32, trust_remote_code=True)
    assert seen["trust_remote_code"] is True and seen["dtype"] == torch.float32


def _problem(exc: SteerkitError):
    assert len(exc.problems) == 1 and exc.problems[0].hint
    return exc.problems[0]


def test_missing_folder_is_a_clean_error(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(DataError) as info:
        load_pretrained(missing)
    assert str(missing) in str(info.value) and _problem(info.value).code == "SK701"
    assert "Traceback" not in str(info.value)


def test_folder_without_config_is_a_clean_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(DataError, match="no config.json") as info:
        load_pretrained(tmp_path)
    assert "save_pretrained" in _problem(info.value).hint
    with pytest.raises(DataError, match="not a model folder"):
        load_pretrained(tmp_path / "weights.bin")


def test_unreachable_hub_id_is_a_clean_error():
    # conftest sets HF_HUB_OFFLINE=1: nothing is fetched, and the id is not cached
    with pytest.raises(DataError) as info:
        load_pretrained("steerkit-test/does-not-exist")
    assert "steerkit-test/does-not-exist" in str(info.value) and _problem(info.value).code == "SK706"


def test_wrong_loader_says_which_to_use(saved):
    with pytest.raises(AdapterError, match="causal_lm"):
        load_pretrained(saved("llama"), loader="image_text_to_text")


def test_bad_options_are_clean_errors(saved):
    with pytest.raises(RecipeError, match="float8"):
        load_pretrained(saved("llama"), loader="causal_lm", dtype="float8")
    with pytest.raises(AdapterError, match="qwen_no_video"):
        load_pretrained(saved("llama"), loader="causal_lm", processor_kind="qwen_no_video")
    with pytest.raises(AdapterError, match="causal"):
        load_pretrained(saved("llama"), loader="causal")


def test_architecture_of_falls_back_to_class_name():
    model = cached_tiny("llama").model
    assert architecture_of(model) == architecture_of(model.config) == "LlamaForCausalLM"
    assert architecture_of(torch.nn.Linear(2, 2)) == "Linear"
