"""The live ``adapters check`` (through nnsight) on tiny models: what it proves, and what it catches.

Every shipped adapter passes on its tiny model; the image token is proven against the vision tower's
feature count (a vision-start marker that merely occurs is caught); residual-stream jumps between
blocks (Qwen3-VL's DeepStack) are reported on image rows only; processor settings that do not fit the
checkpoint, or that name a torchvision-only class, are steerkit errors (exit 2) that keep
transformers' own message.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from steerkit.adapter import Adapter, get_adapter, list_adapters
from steerkit.adapter_check import check_adapter
from steerkit.cli.main import cli
from steerkit.errors import AdapterError
from steerkit.models.zoo import TINY_NAMES, generic_tiny_names, save_tiny
from steerkit.session import ModelSession
from steerkit.testing.fixtures import tiny as cached_tiny

# hand-written tiny model names that are also adapter names (smolvlm is served by idefics3)
NAMES = sorted((set(TINY_NAMES) & set(list_adapters(user=False))) | set(generic_tiny_names()))


def _session(name: str, adapter: Adapter | None = None) -> ModelSession:
    t = cached_tiny(name)
    return ModelSession.from_objects(t.model, t.processor, t.tokenizer, adapter or get_adapter(name))


@pytest.mark.parametrize("name", NAMES)
def test_every_shipped_adapter_passes_live(name):
    lines = check_adapter(_session(name))
    text = "\n".join(lines)
    assert not any(line.startswith("BAD") for line in lines), text
    if get_adapter(name).multimodal and name != "mllama":
        assert "image features" in text  # the token count was compared with the vision tower's output
    if name == "qwen3_vl":  # DeepStack adds visual features to image rows after layer 0
        assert "resid_post[l] != resid_pre[l+1] at 0->1 (image-token rows only)" in text
    else:
        assert "ok  residual stream" in text


def _variant(name: str, **changes) -> Adapter:
    return get_adapter(name).model_copy(update=changes)


def test_a_token_that_only_occurs_is_not_the_image_token():
    adapter = get_adapter("qwen3_vl")
    wrong = adapter.model_copy(update={"image_token": adapter.image_token.model_copy(
        update={"config": "vision_start_token_id"})})
    with pytest.raises(AdapterError) as err:
        check_adapter(_session("qwen3_vl", wrong))
    text = err.value.render()
    assert "SK457" in text and "2 positions of token id" in text and "produces 8 image features" in text


def test_wrong_processor_kind_is_a_steerkit_error(tmp_path):
    from steerkit.resources import builtin_dir

    save_tiny(cached_tiny("llava"), tmp_path / "model")
    bad = tmp_path / "bad.yaml"
    bad.write_text((builtin_dir("adapters") / "llava.yaml").read_text()
                   .replace("processor: {kind: auto}", "processor: {kind: qwen2_5_vl_no_video}"))
    r = CliRunner().invoke(cli, ["adapters", "check", str(tmp_path / "model"), "--adapter", str(bad)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "[SK458]" in r.output and "merge_size" in r.output


def test_torchvision_only_processor_keeps_transformers_message(tmp_path):
    from steerkit.resources import builtin_dir

    save_tiny(cached_tiny("mistral3"), tmp_path / "model")
    bad = tmp_path / "bad.yaml"
    bad.write_text((builtin_dir("adapters") / "mistral3.yaml").read_text()
                   .replace("processor: {kind: pixtral, image_processor: PixtralImageProcessorPil}",
                            "processor: {class: PixtralProcessor}"))
    r = CliRunner().invoke(cli, ["adapters", "check", str(tmp_path / "model"), "--adapter", str(bad)])
    assert r.exit_code == 2, r.output
    assert "[SK708]" in r.output and "PixtralProcessor" in r.output and "torchvision" in r.output
    assert "ImportError: \n" not in r.output and "Traceback" not in r.output


def test_unknown_processor_class_is_a_steerkit_error(tmp_path):
    from steerkit.resources import builtin_dir

    save_tiny(cached_tiny("llava"), tmp_path / "model")
    bad = tmp_path / "bad.yaml"
    bad.write_text((builtin_dir("adapters") / "llava.yaml").read_text()
                   .replace("processor: {kind: auto}", "processor: {class: LlavaProcesor}"))
    r = CliRunner().invoke(cli, ["adapters", "check", str(tmp_path / "model"), "--adapter", str(bad)])
    assert r.exit_code == 2 and "[SK708]" in r.output and "no processor class 'LlavaProcesor'" in r.output
