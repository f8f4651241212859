"""Build a small byte-level BPE tokenizer offline, in litgpt's tokenizer folder format.

litgpt's ``Tokenizer`` reads ``tokenizer.json`` and needs ``tokenizer_config.json`` with ``tokenizer_class``
and the BOS/EOS tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from midtrain.errors import ConfigError

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|endoftext|>"
# the files that define a tokenization (their hash is a shard's tokenizer fingerprint), and those a checkpoint
# carries with it, as litgpt's checkpoints do
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
CHECKPOINT_TOKENIZER_FILES = (*TOKENIZER_FILES, "generation_config.json")


def train_bpe_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 1024) -> Path:
    """Train a byte-level BPE of ``vocab_size`` tokens on ``texts`` and write it to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, BOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "add_bos_token": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def load_tokenizer(source: Path):
    """litgpt's ``Tokenizer`` of a folder, or a ConfigError naming ``--tokenizer_dir`` and the fix."""
    from litgpt.tokenizer import Tokenizer

    try:
        return Tokenizer(source)
    except Exception as exc:  # litgpt raises several types for a missing or foreign tokenizer
        raise ConfigError(f"--tokenizer_dir={str(source)!r} is not a usable litgpt tokenizer folder "
                          f"({type(exc).__name__}: {exc}). Point it at a folder with tokenizer.json and "
                          "tokenizer_config.json.") from None


def decode_texts(tokenizer, rows) -> list[str]:
    """The text of each row of token ids (lists or arrays), special tokens (EOS, BOS) left out, decoded by the
    tokenizer's own processor in one batch."""
    ids = [row.tolist() if hasattr(row, "tolist") else list(row) for row in rows]
    if tokenizer.backend == "huggingface":
        return tokenizer.processor.decode_batch(ids, skip_special_tokens=True)
    return [tokenizer.processor.decode(i) for i in ids]


def decoded_bytes(tokenizer, rows) -> int:
    """The UTF-8 bytes the rows of token ids decode to: the denominator of bits per byte."""
    return sum(len(text.encode("utf-8")) for text in decode_texts(tokenizer, rows))


def tokenizer_identity(tokenizer) -> str:
    """A hash of what the tokenizer maps ids to text by (two checkpoints with one tokenizer share it)."""
    import hashlib

    if tokenizer.backend == "huggingface":
        content = tokenizer.processor.to_str().encode()
    else:
        content = tokenizer.processor.serialized_model_proto()
    return hashlib.sha256(content).hexdigest()[:16]
