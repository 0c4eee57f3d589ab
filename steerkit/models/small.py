"""The small trainable models behind ``embedded:llava`` and ``embedded:qwen2_5_vl``.

Why these sizes: a ~1M-parameter LLaVA (text hidden 128, 4 layers; CLIP hidden 64, 3 layers, 32x32
images in 8-pixel patches = 16 image tokens) learned a 60-person fictitious-profile world to 97-100 %
multiple-choice accuracy in ~150 s on 2 CPU cores (docs/toyworld-lessons.md). The Qwen2.5-VL twin
has the same decoder and a comparable vision tower (4-pixel patches merged 2x2, again 16 image
tokens, projected to the text width). Both are real transformers classes with real processors, so
every steerkit code path (adapters, nnsight, ``load_pretrained``) runs on them unchanged.

The tokenizer is a byte-level BPE trained on the world's own text (~1,000 entries: nearly every
word of the world is one token, which keeps prompts short and the embedding small), with each architecture's
special tokens registered as named extras
(``tok.image_token_id`` ...) because the processors read them. Sizes live in :class:`SmallSize`,
whose ``key()`` enters the embedded-model cache key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Sequence, Union

import torch

ARCHS = ("llava", "qwen2_5_vl")

#: Tokens every small tokenizer starts with (ids 0-3).
BASE_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")

_QWEN_NAMED = {"vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
               "image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
_QWEN_SPECIALS = (*_QWEN_NAMED.values(), "<|im_start|>", "<|im_end|>")

# Chat templates. HF renders with trim_blocks, so newlines are written as {{ '\n' }}.
# LLaVA-1.5 style: "USER: <image>\n{text}\nASSISTANT:" (the answer follows after a space).
LLAVA_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ 'USER: ' }}{% elif m['role'] == 'assistant' %}{{ 'ASSISTANT: ' }}"
    "{% else %}{{ m['role'] | upper }}{{ ': ' }}{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<image>\n' }}{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# Qwen style: <|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Text the chat templates add around every prompt: trained into the BPE so it costs few tokens.
_TEMPLATE_TEXT = ("USER: ", "ASSISTANT:", "ASSISTANT: ", "SYSTEM: ", "user\n", "assistant\n", "system\n")


@dataclass(frozen=True)
class SmallSize:
    """Every size knob of the small models (recorded in the checkpoint, hashed into the cache key)."""

    vocab_size: int = 640  # 1024 made prompts ~26 % shorter but trained worse in 12 epochs (final loss 0.31 vs 0.08)
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 4
    text_mlp: int = 256
    image_size: int = 32
    # LLaVA (CLIP tower)
    clip_hidden: int = 64
    clip_layers: int = 3
    clip_heads: int = 2
    clip_mlp: int = 128
    clip_patch: int = 8
    # Qwen2.5-VL (ViT with window attention and a 2x2 patch merger)
    qwen_vision_hidden: int = 64
    qwen_vision_depth: int = 3
    qwen_vision_heads: int = 2
    qwen_vision_mlp: int = 128
    qwen_patch: int = 4
    qwen_merge: int = 2

    def key(self) -> str:
        """A short stable hash of the sizes."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.clip_patch) ** 2


#: Named size presets. "default" is what ``embedded:*`` uses; "tiny" is for tests.
SIZES: dict[str, SmallSize] = {
    "default": SmallSize(),
    "tiny": SmallSize(vocab_size=400, text_hidden=32, text_layers=2, text_heads=2, text_kv_heads=2,
                      text_mlp=64, clip_hidden=16, clip_layers=1, clip_heads=2, clip_mlp=32,
                      qwen_vision_hidden=16, qwen_vision_depth=1, qwen_vision_heads=2, qwen_vision_mlp=32),
}


def resolve_size(size: Union[str, SmallSize, dict, None]) -> SmallSize:
    """A preset name, a dict of overrides of the default, or a SmallSize -> SmallSize."""
    if size is None:
        return SIZES["default"]
    if isinstance(size, SmallSize):
        return size
    if isinstance(size, dict):
        return replace(SIZES["default"], **size)
    if size not in SIZES:
        raise ValueError(f"unknown size preset '{size}'; choose one of: {', '.join(SIZES)}")
    return SIZES[size]


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown small-model architecture '{arch}'; choose one of: {', '.join(ARCHS)}")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 640, *, arch: str = "llava"):
    """Train a byte-level BPE on ``texts`` and wrap it for ``arch`` (special tokens, chat template).

    LLaVA: BOS ``<s>`` prepended, EOS ``</s>``, named extra ``image_token`` = ``<image>``.
    Qwen2.5-VL: no BOS, EOS ``<|im_end|>``, named extras for the vision start/end/pad tokens.
    Byte-level, so any text (including text never seen in training) still encodes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    _check_arch(arch)
    if arch == "llava":
        specials: tuple[str, ...]
        specials, named, add_bos, eos, template = ("<image>",), {"image_token": "<image>"}, True, "</s>", \
            LLAVA_CHAT_TEMPLATE
    else:
        specials, named, add_bos, eos, template = _QWEN_SPECIALS, dict(_QWEN_NAMED), False, "<|im_end|>", \
            QWEN_CHAT_TEMPLATE
    corpus = sorted({t for t in texts if t})  # order-independent: same texts -> same tokenizer
    corpus.extend(_TEMPLATE_TEXT)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[*BASE_SPECIALS, *specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token=eos, pad_token="<pad>",
                                      unk_token="<unk>", extra_special_tokens=named)
    wrapped.chat_template = template
    wrapped.padding_side = "left"  # generation default; training encodes with padding_side="right"
    return wrapped


def _text_kwargs(size: SmallSize, tok) -> dict[str, Any]:
    return dict(hidden_size=size.text_hidden, intermediate_size=size.text_mlp,
                num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads,
                num_key_value_heads=size.text_kv_heads, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) in Qwen's 16:24:24 ratio."""
    half = head_dim // 2
    t = max(1, round(half * 16 / 64))
    h = (half - t) // 2
    return [t, h, half - t - h]


def _build_llava(size: SmallSize, tok):
    import transformers as tf

    if size.image_size % size.clip_patch:
        raise ValueError("image_size must be a multiple of clip_patch")
    vision = tf.CLIPVisionConfig(hidden_size=size.clip_hidden, intermediate_size=size.clip_mlp,
                                 num_hidden_layers=size.clip_layers, num_attention_heads=size.clip_heads,
                                 image_size=size.image_size, patch_size=size.clip_patch,
                                 projection_dim=size.clip_hidden)
    text = tf.LlamaConfig(**_text_kwargs(size, tok))
    n_img = (size.image_size // size.clip_patch) ** 2
    cfg = tf.LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.image_token_id,  # type: ignore[call-arg]  # alias of image_token_index
                         image_seq_length=n_img, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", tie_word_embeddings=False)
    model = tf.LlavaForConditionalGeneration(cfg)
    ip = tf.CLIPImageProcessor(size={"shortest_edge": size.image_size},
                               crop_size={"height": size.image_size, "width": size.image_size})
    proc = tf.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=size.clip_patch,
                             vision_feature_select_strategy="default",
                             num_additional_image_tokens=1,  # CLIP's CLS; "default" drops it
                             chat_template=LLAVA_CHAT_TEMPLATE)
    return model, proc


def _build_qwen(size: SmallSize, tok):
    import transformers as tf

    from .processors import Qwen25VLNoVideoProcessor

    unit = size.qwen_patch * size.qwen_merge
    if size.image_size % unit:
        raise ValueError("image_size must be a multiple of qwen_patch * qwen_merge")
    head_dim = size.text_hidden // size.text_heads
    ids = {f"{k}_id": tok.convert_tokens_to_ids(v) for k, v in _QWEN_NAMED.items()}
    text = _text_kwargs(size, tok) | {
        # mrope_section must sum to head_dim / 2 (the Hub default [16, 24, 24] needs head_dim 128)
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": _mrope_section(head_dim)}}
    vision = dict(depth=size.qwen_vision_depth, hidden_size=size.qwen_vision_hidden,
                  intermediate_size=size.qwen_vision_mlp, num_heads=size.qwen_vision_heads,
                  patch_size=size.qwen_patch, spatial_merge_size=size.qwen_merge, temporal_patch_size=2,
                  # window_size in pixels: one window spans the whole 32x32 image, so every block sees it all
                  window_size=size.image_size, out_hidden_size=size.text_hidden,
                  fullatt_block_indexes=[size.qwen_vision_depth - 1])
    cfg = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    model = tf.Qwen2_5_VLForConditionalGeneration(cfg)
    pixels = size.image_size * size.image_size
    ip = tf.Qwen2VLImageProcessor(patch_size=size.qwen_patch, merge_size=size.qwen_merge, temporal_patch_size=2,
                                  min_pixels=pixels, max_pixels=pixels)
    proc = Qwen25VLNoVideoProcessor(image_processor=ip, tokenizer=tok, video_processor=None,
                                    chat_template=QWEN_CHAT_TEMPLATE)
    return model, proc


def build_small(arch: str, tokenizer, *, seed: int = 0, size: Union[str, SmallSize, dict] = "default"):
    """Build a freshly initialised small ``arch`` model and its processor around ``tokenizer``.

    The same seed gives the same weights; the global torch RNG is left as it was. The tokenizer must
    come from :func:`train_tokenizer` with the same ``arch`` (it carries the special tokens).
    """
    _check_arch(arch)
    sz = resolve_size(size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, proc = (_build_llava if arch == "llava" else _build_qwen)(sz, tokenizer)
    model.config.architectures = [type(model).__name__]  # what save_pretrained records and adapters key on
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = (tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                         tokenizer.pad_token_id)
    gc.do_sample = False
    return model.eval(), proc


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Total parameters and the split between vision tower (+projector) and language model."""
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters()
                 if any(k in n for k in ("vision_tower", "visual", "multi_modal_projector")))
    return {"total": total, "vision": vision, "language": total - vision}


def world_texts(pairs: Sequence[Any]) -> list[str]:
    """The text a tokenizer is trained on: every training prompt and answer."""
    out: list[str] = []
    for p in pairs:
        out.append(p.prompt)
        out.append(p.answer)
    return out
