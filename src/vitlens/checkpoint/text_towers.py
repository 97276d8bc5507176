"""The text halves of CLIP-like models, kept beside the image model as ``model.text_tower``.

Texts are tokenized and encoded by the source library itself (OpenCLIP's tokenizer and
``encode_text``; transformers' tokenizer and ``get_text_features``), so a text embedding is
exactly the one that library computes. Nothing is built until the first text is encoded: loading
the image model stays as fast, and works offline, whether or not the tokenizer is at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

CLIP_VOCAB_SIZE = 49408  # OpenCLIP's default tokenizer (OpenAI CLIP's byte-pair encoding)


def _first_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class OpenClipText:
    """An OpenCLIP model's ``encode_text`` with its tokenizer.

    ``tokenizer``: OpenCLIP's (``open_clip.get_tokenizer(name)``), or a function that makes it. By
    default the tokenizer of OpenCLIP's own text transformer (the CLIP byte-pair encoding at the
    model's context length); a model with another vocabulary (SigLIP's) needs its own tokenizer.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, make_tokenizer: Callable[[], Any] | None = None):
        self.model = model
        self._tokenizer = tokenizer
        self._make_tokenizer = make_tokenizer

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self._make_tokenizer() if self._make_tokenizer is not None else self._default_tokenizer()
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def _default_tokenizer(self) -> Any:
        from open_clip.tokenizer import SimpleTokenizer

        vocab = getattr(self.model, "vocab_size", None)
        if vocab != CLIP_VOCAB_SIZE:
            raise ValueError(
                f"this OpenCLIP model's text tower has a vocabulary of {vocab} tokens, not CLIP's {CLIP_VOCAB_SIZE}: "
                "give its tokenizer, vitlens.from_open_clip(model, tokenizer=open_clip.get_tokenizer(NAME))"
            )
        return SimpleTokenizer(context_length=self.model.context_length)

    def encode(self, texts: Sequence[str]) -> Tensor:
        """(T, E) text embeddings, before normalisation, as ``encode_text`` returns them."""
        tokens = self.tokenizer(list(texts))
        with torch.no_grad():
            return self.model.encode_text(tokens.to(_first_device(self.model))).float()


class HfText:
    """A transformers CLIP or SigLIP model's ``get_text_features`` with its tokenizer.

    ``model``: a live ``CLIPModel`` / ``SiglipModel``, or ``folder``: one saved with
    ``save_pretrained`` (built on first use). The tokenizer's output goes in as transformers documents
    it: SigLIP pads every text to the full length, as it was trained; CLIP to the longest text.
    """

    def __init__(self, model: nn.Module | None = None, folder: Path | str | None = None, tokenizer: Any = None):
        if (model is None) == (folder is None):
            raise ValueError("HfText takes a transformers model or a folder, one of the two")
        self._model, self.folder, self._tokenizer = model, folder, tokenizer

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            from transformers import AutoModel

            self._model = AutoModel.from_pretrained(str(self.folder)).eval()
        return self._model

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            if self.folder is None:
                raise ValueError(
                    "encoding text needs the model's tokenizer: from_hf(model, tokenizer=AutoTokenizer...)"
                )
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
            except (OSError, ValueError) as e:
                raise ValueError(
                    f"{self.folder} has no tokenizer transformers can read ({str(e).splitlines()[0][:200]}); "
                    "save the model's tokenizer there, or set model.text_tower.tokenizer"
                ) from e
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def encode(self, texts: Sequence[str]) -> Tensor:
        """(T, E) text embeddings, before normalisation, as ``get_text_features`` returns them."""
        model = self.model
        padding = "max_length" if "siglip" in model.config.model_type else True
        inputs = self.tokenizer(list(texts), padding=padding, truncation=True, return_tensors="pt")
        inputs = {k: v.to(_first_device(model)) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            features = model.get_text_features(**inputs)
        return (features if isinstance(features, Tensor) else features.pooler_output).float()
