"""No-video processors and the processor save / rebuild path (torchvision is absent by design)."""

from __future__ import annotations

import json

import pytest
import torch

from steerkit.models.processors import (
    Qwen25VLNoVideoProcessor,
    build_processor,
    load_processor,
    no_video_kind,
    save_processor,
)
from steerkit.models.zoo import tiny_image
from steerkit.testing.fixtures import tiny as cached_tiny

NO_VIDEO = {"qwen2_vl": "qwen2_vl_no_video", "qwen2_5_vl": "qwen2_5_vl_no_video", "smolvlm": "smolvlm_no_video"}


def _encode(processor, prompts):
    images = [[tiny_image(i)] for i in range(len(prompts))]
    return processor(images=images, text=prompts, return_tensors="pt", padding=True)


@pytest.mark.parametrize("name", sorted(NO_VIDEO))
@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_rebuilt_processor_equals_original(name, kind, tmp_path):
    original = cached_tiny(name).processor
    save_processor(original, tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert no_video_kind(config["processor_class"]) == NO_VIDEO[name]  # the stock class name is recorded
    rebuilt = load_processor(tmp_path, "auto" if kind == "auto" else NO_VIDEO[name])
    assert type(rebuilt) is type(original)
    assert rebuilt.chat_template == original.chat_template
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this image?"}]}]
    prompt = rebuilt.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert prompt == original.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    prompts = [prompt, prompt.replace("What is in this image?", "Describe the picture in one sentence.")]
    a, b = _encode(original, prompts), _encode(rebuilt, prompts)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


def test_build_processor_from_parts_keeps_settings(tmp_path):
    original = cached_tiny("smolvlm").processor
    save_processor(original, tmp_path)
    rebuilt = build_processor("smolvlm_no_video", tmp_path, original.tokenizer, original.image_processor)
    assert rebuilt.image_seq_len == original.image_seq_len == 4  # read from processor_config.json
    bare = build_processor("smolvlm_no_video", None, original.tokenizer, original.image_processor, image_seq_len=4)
    assert bare.image_seq_len == 4 and bare.chat_template is None
    assert build_processor("tokenizer", tmp_path, original.tokenizer, None) is None


def test_no_video_processor_saves_in_stock_layout(tmp_path):
    proc = cached_tiny("qwen2_5_vl").processor
    assert isinstance(proc, Qwen25VLNoVideoProcessor) and proc.video_processor is None
    proc.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"processor_config.json", "preprocessor_config.json", "tokenizer.json", "chat_template.jinja"} <= names
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "Qwen2_5_VLProcessor" and "video_processor" not in config


def test_save_processor_handles_stock_processors_and_tokenizers(tmp_path):
    save_processor(cached_tiny("llava").processor, tmp_path / "llava")
    assert type(load_processor(tmp_path / "llava")).__name__ == "LlavaProcessor"
    save_processor(cached_tiny("llama").tokenizer, tmp_path / "llama")
    assert (tmp_path / "llama" / "tokenizer.json").is_file()
    assert load_processor(tmp_path / "llama", "tokenizer") is None


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="qwen2_vl_no_video"):
        load_processor(tmp_path, "qwen_no_video")
    with pytest.raises(ValueError, match="choose one of"):
        build_processor("nope", None, None, None)
