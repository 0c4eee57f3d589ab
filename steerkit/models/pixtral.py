"""The Pixtral processor (Mistral3, Mistral-Large-4) without torchvision: a hand-written processor kind.

Why code and not data: transformers declares ``PixtralProcessor`` torchvision-only (its module imports
the torchvision image processor for one helper), so no setting can make the stock class usable here,
and no other transformers processor writes Pixtral's prompt layout (a row of ``[IMG]`` tokens per
patch row, each row closed by ``[IMG_BREAK]``, the last by ``[IMG_END]``). This is the same logic as
transformers 5's ``PixtralProcessor``, with the PIL image processor; it saves as ``PixtralProcessor``
so an environment with torchvision loads the checkpoint with the stock class.
"""

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin


class PixtralNoTorchvisionProcessor(ProcessorMixin):
    """Pixtral's processor for images and text, built on ``PixtralImageProcessorPil``."""

    stock_name = "PixtralProcessor"  # what processor_config.json records
    text_kwargs = {"return_tensors": "pt"}
    images_kwargs = {"return_tensors": "pt"}

    def __init__(self, image_processor=None, tokenizer=None, patch_size: int = 16, spatial_merge_size: int = 1,
                 chat_template=None, image_token: str = "[IMG]", image_break_token: str = "[IMG_BREAK]",
                 image_end_token: str = "[IMG_END]", **kwargs: Any):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.patch_size = patch_size
        self.spatial_merge_size = spatial_merge_size
        self.image_token, self.image_break_token, self.image_end_token = image_token, image_break_token, image_end_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.image_break_token_id = tokenizer.convert_tokens_to_ids(image_break_token)
        self.image_end_token_id = tokenizer.convert_tokens_to_ids(image_end_token)

    @property  # type: ignore[misc]  # transformers declares a plain attribute
    def image_token_ids(self) -> list[int | None]:
        return [self.image_token_id, self.image_break_token_id, self.image_end_token_id]

    def _process_images(self, images, **images_kwargs):
        images_kwargs["patch_size"] = self.patch_size * self.spatial_merge_size
        return super()._process_images(images, **images_kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        patch = self.patch_size * self.spatial_merge_size
        height, width = image_inputs["image_sizes"][image_idx]
        rows = [[self.image_token] * (width // patch) + [self.image_break_token]] * (height // patch)
        tokens = [t for row in rows for t in row]
        tokens[-1] = self.image_end_token
        return "".join(tokens)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["processor_class"] = self.stock_name
        return out

    @property
    def model_input_names(self) -> list[str]:
        names = list(self.tokenizer.model_input_names) + list(self.image_processor.model_input_names)
        return list(dict.fromkeys(names)) + ["image_sizes"]
