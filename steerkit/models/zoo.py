"""Tiny random-weight models of every supported family, built offline from real config classes.

Why: no weights can be downloaded in tests or CI, yet adapters, the runtime and the CLI must be
proven on the real transformers classes (module paths, tuple-ness, processors, chat templates).
Each builder makes a 2-layer decoder (hidden 64) with a tiny vision tower, a byte-level BPE
tokenizer trained in code on a small English corpus, and a processor that works without
torchvision. ``save_tiny`` writes a Hub-like checkpoint that ``loading.load_pretrained`` reads, so
tests exercise the exact code path a user's model id takes. Recipes and sizes follow
docs/stack-notes.md section 2; every quirk is commented where it is handled. Families added later are
built generically from their adapter's ``tiny:`` section (``tiny_generic``), with no builder here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

TINY_NAMES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "gemma3", "paligemma",
              "mllama", "llama", "qwen2")

_SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "a small bird", "the old man", "our team",
             "the red car", "a young girl", "the doctor", "this picture", "the city"]
_VERBS = ["sees", "likes", "finds", "shows", "paints", "holds", "reads", "opens", "watches", "draws"]
_OBJECTS = ["a blue house", "the green tree", "an open window", "the bright sun", "a yellow flower",
            "the long road", "a white boat", "the quiet river", "a big mountain", "the wooden table"]
_EXTRA = ["What is in this image?", "Describe the picture in one sentence.", "Who is the person in the photo?",
          "I can not help with that request.", "Sure, here is the answer.", "The answer is yes.",
          "The answer is no.", "Where does she live? She lives in a town near the sea.",
          "What is his job? He works as a pilot.", "Numbers: one two three four five six seven eight nine ten.",
          "A: red, B: green, C: blue, D: black."]
# Every 7th subject-verb-object combination (~170 sentences) plus prompt-like lines: enough text for
# 400 BPE merges, so prompts tokenize into realistic multi-token words rather than bytes.
CORPUS = tuple(f"{s} {v} {o}." for s, v, o in itertools.islice(itertools.product(_SUBJECTS, _VERBS, _OBJECTS),
                                                                 0, None, 7)) + tuple(_EXTRA)


@dataclass
class TinyModel:
    """A tiny model with its processor (None for text-only families) and tokenizer."""

    model: Any
    processor: Any
    tokenizer: Any
    name: str

    @property
    def multimodal(self) -> bool:
        return self.processor is not None

    def prompt(self, text: str = "What is in this image?", image: bool = True) -> str:
        """One user turn rendered the way this family expects (chat template, or PaliGemma's plain text)."""
        if self.name == "paligemma":  # no chat template: the processor inserts image tokens and BOS itself
            return ("<image>" if image else "") + text
        content: Any = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        msgs = [{"role": "user", "content": content if self.multimodal else text}]
        owner = self.processor if self.multimodal else self.tokenizer
        return owner.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    def inputs(self, texts: list[str] | str = "What is in this image?", image: bool = True, seed: int = 0) -> dict:
        """A ready processor (or tokenizer) encoding of one prompt per text, one image each when ``image``."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        prompts = [self.prompt(t, image=image and self.multimodal) for t in texts]
        if not (image and self.multimodal):
            return dict(self.tokenizer(prompts, return_tensors="pt", padding=True))
        # One list of images per prompt: Gemma3, Mllama and SmolVLM refuse a flat list for a batch.
        images = [[tiny_image(seed + i)] for i in range(len(texts))]
        enc = dict(self.processor(images=images, text=prompts, return_tensors="pt", padding=True))
        enc.pop("labels", None)  # PaliGemma adds labels; keep model(**enc) a plain forward
        return enc


def tiny_image(seed: int = 0, size: int = 32):
    """A deterministic random RGB PIL image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def chat_template(image: str, start: str = "{{ m['role'] }}: ", end: str = "{{ '\\n' }}",
                  gen: str = "assistant:") -> str:
    """A Jinja chat template; newlines are written as ``{{ '\\n' }}`` because HF renders with trim_blocks."""
    return ("{% for m in messages %}" + start + "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
            "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + image + "{% else %}{{ c['text'] }}"
            "{% endif %}{% endfor %}{% endif %}" + end + "{% endfor %}{% if add_generation_prompt %}" + gen
            + "{% endif %}")


@lru_cache(maxsize=None)
def _trained_bpe(specials: tuple[str, ...], add_bos: bool, vocab_size: int) -> str:
    """Train once per special-token set and cache the JSON (training is the slow part, ~0.1 s)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>", *specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok.to_str()


def make_tokenizer(specials: tuple[str, ...] = (), named: dict[str, str] | None = None, *, add_bos: bool = True,
                   eos: str = "</s>", template: str | None = None, vocab_size: int = 400):
    """A fresh byte-level BPE tokenizer; ``named`` become attributes like ``tok.image_token(_id)``."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_bpe(tuple(specials), add_bos, vocab_size))
    # Left padding: decoder-only batches generate correctly only when left-padded (saved with the tokenizer).
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token=eos, pad_token="<pad>",
                                  unk_token="<unk>", extra_special_tokens=dict(named or {}), padding_side="left")
    tok.chat_template = template
    return tok


def _llama_text(tok, cls_name: str = "LlamaConfig", **kw):
    import transformers

    base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return getattr(transformers, cls_name)(**{**base, **kw})


def _clip_vision():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=32, patch_size=8, projection_dim=32)


def _llava(next_: bool = False, **text):
    import transformers as tf

    tok = make_tokenizer(("<image>",), {"image_token": "<image>"}, template=chat_template("{{ '<image>\\n' }}"))
    image_id = tok.image_token_id
    common = dict(vision_config=_clip_vision(), text_config=_llama_text(tok, **text), image_token_id=image_id,
                  vision_feature_layer=-2, vision_feature_select_strategy="default")
    pkw = dict(tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
               num_additional_image_tokens=1,  # CLIP's CLS; "default" drops it -> (32/8)^2 = 16 tokens
               chat_template=tok.chat_template)
    if not next_:
        ip = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        cfg = tf.LlavaConfig(image_seq_length=16, **common)
        return tf.LlavaForConditionalGeneration(cfg), tf.LlavaProcessor(image_processor=ip, **pkw), tok
    pins = [[32, 32], [32, 64], [64, 32], [64, 64]]  # anyres grid; the same list in config and processor
    ip = tf.LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                    image_grid_pinpoints=pins)
    cfg = tf.LlavaNextConfig(image_grid_pinpoints=pins, **common)
    return tf.LlavaNextForConditionalGeneration(cfg), tf.LlavaNextProcessor(image_processor=ip, **pkw), tok


def _qwen(v25: bool):
    import transformers as tf

    from .processors import Qwen2VLNoVideoProcessor, Qwen25VLNoVideoProcessor

    names = {"vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
             "image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
    tmpl = chat_template("<|vision_start|><|image_pad|><|vision_end|>", start="<|im_start|>{{ m['role'] }}\n",
                         end="<|im_end|>{{ '\\n' }}", gen="<|im_start|>assistant{{ '\\n' }}")
    tok = make_tokenizer((*names.values(), "<|im_start|>", "<|im_end|>"), names, add_bos=False,
                         eos="<|im_end|>", template=tmpl)
    ids = {f"{k}_id": tok.convert_tokens_to_ids(v) for k, v in names.items()}
    # mrope_section must sum to head_dim / 2 (= 8 here); the default [16, 24, 24] needs head_dim 128.
    text = _llama_text(tok, "Qwen2Config").to_dict() | {
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [4, 2, 2]}}
    ip = tf.Qwen2VLImageProcessor(patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32,
                                  max_pixels=32 * 32)
    vis = dict(depth=2, num_heads=2, patch_size=4, spatial_merge_size=2, temporal_patch_size=2)
    if v25:
        vis |= dict(hidden_size=32, intermediate_size=64, window_size=16, out_hidden_size=64,
                    fullatt_block_indexes=[1])
        cfg, model_cls, proc_cls = tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration, Qwen25VLNoVideoProcessor
    else:
        vis |= dict(embed_dim=32, hidden_size=64, mlp_ratio=2)
        cfg, model_cls, proc_cls = tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration, Qwen2VLNoVideoProcessor
    model = model_cls(cfg(text_config=text, vision_config=vis, **ids))
    return model, proc_cls(image_processor=ip, tokenizer=tok, video_processor=None, chat_template=tmpl), tok


def _idefics3(smol: bool):
    import transformers as tf

    from .processors import SmolVLMNoVideoProcessor

    grid = tuple(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))  # else they map to <unk>
    tmpl = chat_template("<image>", start="{{ m['role'] | capitalize }}:", end="<end_of_utterance>{{ '\\n' }}",
                         gen="Assistant:")
    tok = make_tokenizer(("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *grid),
                         {"image_token": "<image>"}, template=tmpl)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    ip_kw = dict(size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False)
    # scale_factor 2 pixel-shuffles the 4x4 patch grid into image_seq_len = 16 / 2^2 = 4 tokens
    kw = dict(text_config=_llama_text(tok), image_token_id=tok.image_token_id, scale_factor=2)
    if smol:
        model = tf.SmolVLMForConditionalGeneration(tf.SmolVLMConfig(vision_config=vision, **kw))
        proc = SmolVLMNoVideoProcessor(image_processor=tf.SmolVLMImageProcessor(**ip_kw), tokenizer=tok,
                                    video_processor=None, image_seq_len=4, chat_template=tmpl)
        return model, proc, tok
    model = tf.Idefics3ForConditionalGeneration(tf.Idefics3Config(vision_config=vision, **kw))
    proc = tf.Idefics3Processor(image_processor=tf.Idefics3ImageProcessor(**ip_kw), tokenizer=tok, image_seq_len=4,
                                chat_template=tmpl)
    return model, proc, tok


def _siglip(**kw):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(**{**dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8), **kw})


def _gemma3():
    import transformers as tf

    names = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tmpl = chat_template("{{ '<start_of_image>' }}", start="<start_of_turn>{{ m['role'] }}\n",
                         end="<end_of_turn>{{ '\\n' }}", gen="<start_of_turn>model{{ '\\n' }}")
    tok = make_tokenizer(tuple(names.values()) + ("<start_of_turn>", "<end_of_turn>"), names, template=tmpl)
    text = _llama_text(tok, "Gemma3TextConfig", head_dim=16, query_pre_attn_scalar=16, sliding_window=16)
    cfg = tf.Gemma3Config(text_config=text, vision_config=_siglip(), mm_tokens_per_image=4,  # 4x4 patches pooled to 2x2
                          boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id,
                          image_token_index=tok.image_token_id)
    ip = tf.Gemma3ImageProcessor(size={"height": 32, "width": 32})
    proc = tf.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=4, chat_template=tmpl)
    return tf.Gemma3ForConditionalGeneration(cfg), proc, tok


def _paligemma():
    import transformers as tf

    tok = make_tokenizer(("<image>",), {"image_token": "<image>"})  # PaliGemma has no chat template
    ip = tf.SiglipImageProcessor(size={"height": 32, "width": 32})
    ip.image_seq_length = 16  # the processor requires this attribute: (32/8)^2 patches
    proc = tf.PaliGemmaProcessor(image_processor=ip, tokenizer=tok)  # adds 1152 <loc>/<seg> tokens to tok
    text = _llama_text(tok, "GemmaConfig", head_dim=16)  # so size the vocab only after building the processor
    cfg = tf.PaliGemmaConfig(text_config=text, vision_config=_siglip(projection_dim=64), projection_dim=64,
                             hidden_size=64, image_token_index=tok.image_token_id, vocab_size=len(tok))
    return tf.PaliGemmaForConditionalGeneration(cfg), proc, tok


def _mllama():
    import transformers as tf

    tok = make_tokenizer(("<|image|>", "<|python_tag|>"), {"image_token": "<|image|>"},
                         template=chat_template("<|image|>"))
    vision = tf.MllamaVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                                   attention_heads=2, image_size=32, patch_size=8, max_num_tiles=4,
                                   intermediate_layers_indices=[0],
                                   vision_output_dim=64,  # hidden * (1 + len(intermediate_layers_indices))
                                   supported_aspect_ratios=[[1, 1], [1, 2], [2, 1], [2, 2]])
    # layer 1 is a cross-attention layer (no self_attn; skipped entirely on text-only prompts)
    text = _llama_text(tok, "MllamaTextConfig", cross_attention_layers=[1])
    ip = tf.MllamaImageProcessor(size={"height": 32, "width": 32}, max_image_tiles=4)
    cfg = tf.MllamaConfig(vision_config=vision, text_config=text, image_token_index=tok.image_token_id)
    return tf.MllamaForConditionalGeneration(cfg), tf.MllamaProcessor(ip, tok, chat_template=tok.chat_template), tok


def _text_only(qwen: bool):
    import transformers as tf

    tok = make_tokenizer(template=chat_template(""), add_bos=not qwen)
    if qwen:
        return tf.Qwen2ForCausalLM(_llama_text(tok, "Qwen2Config")), None, tok
    return tf.LlamaForCausalLM(_llama_text(tok)), None, tok


_BUILDERS: dict[str, Callable[[], tuple[Any, Any, Any]]] = {
    "llava": lambda: _llava(False), "llava_next": lambda: _llava(True), "qwen2_vl": lambda: _qwen(False),
    "qwen2_5_vl": lambda: _qwen(True), "idefics3": lambda: _idefics3(False), "smolvlm": lambda: _idefics3(True),
    "gemma3": _gemma3, "paligemma": _paligemma, "mllama": _mllama, "llama": lambda: _text_only(False),
    "qwen2": lambda: _text_only(True),
}


def generic_tiny_names(user: bool = False) -> tuple[str, ...]:
    """Adapters with a ``tiny:`` section and no hand-written builder: built from their YAML alone."""
    from ..adapter import list_adapters

    return tuple(sorted(n for n, (a, _) in list_adapters(user).items() if a.tiny is not None and n not in _BUILDERS))


def _builder(name: str) -> Callable[[], tuple[Any, Any, Any]]:
    if name in _BUILDERS:
        return _BUILDERS[name]
    from ..adapter import list_adapters
    from .tiny_generic import build_from_adapter

    found = list_adapters().get(name)
    if found is None or found[0].tiny is None:
        raise ValueError(f"no tiny model '{name}'; choose one of: {', '.join(TINY_NAMES + generic_tiny_names(True))}")
    adapter = found[0]
    return lambda: build_from_adapter(adapter, adapter.match.architectures[0])


def build_tiny(name: str, *, seed: int = 0, std: float | None = None) -> TinyModel:
    """Build the tiny model ``name`` (see ``TINY_NAMES``, or any adapter with a ``tiny:`` section, built
    generically from its config class); the same seed gives the same weights.

    ``std`` re-initialises every weight matrix (and Mllama's scalar tanh gates) from N(0, std):
    default init gives near-flat logits, which hides whether steering changed anything, and closed
    gates hide the image. Norm weights and biases keep their init. The global torch RNG is left untouched.
    """
    builder = _builder(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor, tok = builder()
        if std is not None:
            with torch.no_grad():
                for pname, p in model.named_parameters():
                    # Mllama's tanh gates start at 0, which would cut the image off from the text.
                    if p.dim() >= 2 or "gate" in pname.rsplit(".", 1)[-1]:
                        p.normal_(0.0, std)
    model.config.architectures = [type(model).__name__]  # what save_pretrained records and adapters key on
    return TinyModel(model.eval(), processor, tok, name)


def build_llava(*, seed: int = 0, **text) -> TinyModel:
    """The tiny LLaVA (same vision tower, tokenizer and processor) with a Llama decoder of any size, e.g.
    ``build_llava(hidden_size=512, num_hidden_layers=32)``: random weights, for benchmarks that need width
    or depth. ``text`` overrides LlamaConfig fields."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor, tok = _llava(False, **text)
    model.config.architectures = [type(model).__name__]
    return TinyModel(model.eval(), processor, tok, "llava")


def save_tiny(tiny: TinyModel, out_dir: str | Path) -> Path:
    """Write ``tiny`` as a Hub-like checkpoint (weights, config, tokenizer, processor files)."""
    from .processors import save_processor

    out = Path(out_dir)
    tiny.model.save_pretrained(out)
    if tiny.processor is not None:
        save_processor(tiny.processor, out)
    else:
        tiny.tokenizer.save_pretrained(out)
    return out
