"""Encoding text as litgpt does, in batches, in worker processes that need not import litgpt: the special-token
choices of litgpt's ``Tokenizer`` (decided once, in the parent) applied to the tokenizer's own processor."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from midtrain.errors import ConfigError
from midtrain.tokenizer import TOKENIZER_FILES


def tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(tokenizer_dir) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def encode_batch(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as litgpt's ``Tokenizer.encode(text, eos=True)`` gives them, encoded as a batch.

    ``tokenizer`` is a litgpt ``Tokenizer`` or a ``BatchEncoder`` (the same ``backend``, ``processor``, ``bos_id``,
    ``eos_id`` and ``use_bos``)."""
    if tokenizer.backend == "huggingface":
        encoded = [e.ids for e in tokenizer.processor.encode_batch(list(texts), add_special_tokens=True)]
    else:
        encoded = tokenizer.processor.encode(list(texts))
    out = []
    for ids in encoded:
        ids = list(ids)
        if tokenizer.use_bos:
            if not ids or ids[0] != tokenizer.bos_id:
                ids.insert(0, tokenizer.bos_id)
        elif ids and ids[0] == tokenizer.bos_id:
            ids = ids[1:]
        if not ids or ids[-1] != tokenizer.eos_id:
            ids.append(tokenizer.eos_id)
        out.append(ids)
    return out


@dataclass(frozen=True)
class EncoderSpec:
    """What a worker needs to encode like litgpt: the special tokens are decided once, by litgpt's ``Tokenizer`` in
    the parent process, so that workers need not import litgpt (~4 s each) just to encode."""

    tokenizer_dir: str
    backend: str
    bos_id: int | None
    eos_id: int
    use_bos: bool
    vocab_size: int = 0

    @classmethod
    def from_tokenizer_dir(cls, tokenizer_dir: Path) -> EncoderSpec:
        from litgpt.tokenizer import Tokenizer

        tokenizer = Tokenizer(tokenizer_dir)
        if tokenizer.eos_id is None:
            raise ConfigError(
                f"--tokenizer_dir={str(tokenizer_dir)!r} defines no EOS token, and prepare ends every document with "
                "one. Add \"eos_token\" to its tokenizer_config.json."
            )
        return cls(str(tokenizer_dir), tokenizer.backend, tokenizer.bos_id, tokenizer.eos_id, tokenizer.use_bos,
                   tokenizer.vocab_size)


class BatchEncoder:
    """The tokenizer's own processor (``tokenizers`` or ``sentencepiece``) with litgpt's special-token choices."""

    def __init__(self, spec: EncoderSpec) -> None:
        self.backend, self.bos_id, self.eos_id, self.use_bos = spec.backend, spec.bos_id, spec.eos_id, spec.use_bos
        if spec.backend == "huggingface":
            from tokenizers import Tokenizer

            self.processor = Tokenizer.from_file(str(Path(spec.tokenizer_dir) / "tokenizer.json"))
        else:
            from sentencepiece import SentencePieceProcessor

            self.processor = SentencePieceProcessor(model_file=str(Path(spec.tokenizer_dir) / "tokenizer.model"))


_ENCODERS: dict = {}


def cached_encoder(spec: EncoderSpec) -> BatchEncoder:
    if spec not in _ENCODERS:
        _ENCODERS[spec] = BatchEncoder(spec)
    return _ENCODERS[spec]
