"""The tiny model zoo: every family builds fast, runs forward and generate, and is deterministic."""

from __future__ import annotations

import time

import pytest
import torch

from steerkit.models.zoo import TINY_NAMES, build_tiny, chat_template, generic_tiny_names, make_tokenizer
from steerkit.testing.fixtures import tiny as cached_tiny

TEXT_ONLY = {"llama", "qwen2"}
ALL_NAMES = TINY_NAMES + generic_tiny_names()  # hand-written builders, then adapters' tiny: sections


def test_generic_builder_serves_the_new_families():
    assert {"qwen3_vl", "llava_onevision", "mistral3", "internvl", "aya_vision"} <= set(generic_tiny_names())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_forward_and_generate(name):
    tiny = cached_tiny(name)
    assert tiny.multimodal == (name not in TEXT_ONLY)
    enc = tiny.inputs(["What is in this image?", "Describe the picture in one sentence."])
    assert enc["input_ids"].shape[0] == 2 and (enc["attention_mask"][:, -1] == 1).all()  # left-padded
    with torch.no_grad():
        logits = tiny.model(**enc).logits
        out = tiny.model.generate(**enc, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                  pad_token_id=tiny.tokenizer.pad_token_id)
    assert logits.shape[:2] == enc["input_ids"].shape and torch.isfinite(logits).all()
    assert logits.shape[-1] == tiny.model.get_output_embeddings().out_features
    assert logits[:, -1].std() > 0.05  # std=0.1 re-init: logits are not flat
    assert out.shape == (2, enc["input_ids"].shape[1] + 4)
    if tiny.multimodal:  # the image reaches the answer (Mllama: only once its cross-attention gates open)
        other = tiny.inputs(["What is in this image?", "Describe the picture in one sentence."], seed=100)
        with torch.no_grad():
            moved = (tiny.model(**other).logits[:, -1] - logits[:, -1]).abs().amax()
        assert moved > 1e-4


@pytest.mark.parametrize("name", ALL_NAMES)
def test_build_is_fast_and_deterministic(name):
    cached_tiny(name)  # warm the imports and the tokenizer cache
    start = time.perf_counter()
    a = build_tiny(name, seed=3)
    assert time.perf_counter() - start < 2.0
    b, c = build_tiny(name, seed=3), build_tiny(name, seed=4)
    pa, pb, pc = (dict(m.model.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    assert a.model.config.architectures == [type(a.model).__name__]
    assert not a.model.training


def test_std_reinitialises_matrices_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    tiny = build_tiny("llama", std=0.5)
    assert torch.equal(torch.rand(3), before)
    weight = tiny.model.get_submodule("model.layers.0.mlp.up_proj").weight
    assert abs(weight.std().item() - 0.5) < 0.05
    norm = tiny.model.get_submodule("model.layers.0.input_layernorm").weight
    assert torch.equal(norm, torch.ones_like(norm))  # 1-d params (norms, biases) keep their init


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="llava_next"):
        build_tiny("lava")


def test_chat_template_keeps_newlines():
    # HF renders templates with trim_blocks: a literal newline after {% endfor %} would vanish.
    tok = make_tokenizer(template=chat_template("<image>"))
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == "user: hi\nassistant: yo\nassistant:"


@pytest.mark.parametrize("name", ["llava", "qwen2_5_vl", "smolvlm", "gemma3", "mllama", "paligemma"])
def test_image_prompts_hold_the_image_token(name):
    tiny = cached_tiny(name)
    prompt = tiny.prompt("What is in this image?")
    assert "What is in this image?" in prompt
    image_id = tiny.model.config.image_token_id
    assert (tiny.inputs("What is in this image?")["input_ids"] == image_id).any()


def test_package_import_is_lazy():
    import subprocess
    import sys

    code = "import sys, steerkit.models as m; assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_build_llava_takes_any_decoder_size_and_shares_the_tiny_processor():
    from steerkit.models.zoo import build_llava

    t = build_llava(hidden_size=96, num_hidden_layers=3, num_attention_heads=4)
    text = t.model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers) == (96, 3)
    assert t.model.config.architectures == ["LlavaForConditionalGeneration"]
    out = t.model(**t.inputs(["What is in this image?"]))
    assert out.logits.shape[-1] == len(t.tokenizer)
    again = build_llava(hidden_size=96, num_hidden_layers=3, num_attention_heads=4)
    assert all(torch.equal(a, b) for a, b in zip(t.model.parameters(), again.model.parameters()))
