"""lm-evaluation-harness on a litgpt ``GPT`` in memory: no conversion to Hugging Face format.

``LitGPTHarnessModel`` implements the harness's ``TemplateLM`` (the harness splits context and continuation into
tokens; we score them): log-likelihoods in right-padded batches, rolling log-likelihoods over windows of the
model's block size, and greedy generation with stop strings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window


class LitGPTHarnessModel(TemplateLM):
    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device, block_size: int, batch_size: int = 8,
                 max_new_tokens: int = 256) -> None:
        super().__init__()
        self.model, self.lit_tokenizer, self._device = model, tokenizer, device
        self.block_size, self.batch_size_per_forward, self.max_new_tokens = block_size, batch_size, max_new_tokens

    @property
    def eot_token_id(self) -> int:
        eos = self.lit_tokenizer.eos_id
        return eos if eos is not None else 0

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.lit_tokenizer.encode(string, bos=bool(add_special_tokens), eos=False).tolist()

    def tok_decode(self, tokens: list[int]) -> str:
        return self.lit_tokenizer.decode(torch.tensor(tokens, dtype=torch.long))

    @torch.no_grad()
    def _score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log-probabilities of the continuation, whether greedy decoding yields it) per pair; sequences
        longer than the block keep their last ``block_size + 1`` tokens, as the harness's own models do."""
        prepared = []
        for context, continuation in pairs:
            sequence = (context + continuation)[-(self.block_size + 1):]
            scored = min(len(continuation), len(sequence) - 1)
            prepared.append((sequence[:-1], sequence[len(sequence) - scored:]))
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: -len(prepared[i][0]))  # similar lengths share a batch
        for start in range(0, len(order), self.batch_size_per_forward):
            indices = order[start : start + self.batch_size_per_forward]
            width = max(len(prepared[i][0]) for i in indices)
            batch = torch.zeros(len(indices), width, dtype=torch.long)
            for row, i in enumerate(indices):
                batch[row, : len(prepared[i][0])] = torch.tensor(prepared[i][0])
            log_probs = F.log_softmax(self.model(batch.to(self._device)).float(), dim=-1).cpu()
            for row, i in enumerate(indices):
                inputs, target = prepared[i]
                positions = slice(len(inputs) - len(target), len(inputs))
                picked = log_probs[row, positions]
                target_ids = torch.tensor(target, dtype=torch.long)
                total = picked.gather(1, target_ids[:, None]).sum().item()
                results[i] = (total, bool((picked.argmax(-1) == target_ids).all()))
        return results  # type: ignore[return-value]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        return self._score_pairs([(context, continuation) for _, context, continuation in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        totals = []
        for request in requests:
            (text,) = request.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id, max_seq_len=self.block_size,
                context_len=1)]
            totals.append(sum(logprob for logprob, _ in self._score_pairs(windows)))
        return totals

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        outputs = []
        for request in requests:
            context, gen_kwargs = request.args
            stops = gen_kwargs.get("until") or []
            stops = [stops] if isinstance(stops, str) else list(stops)
            max_tokens = int(gen_kwargs.get("max_gen_toks", self.max_new_tokens))
            tokens = self.tok_encode(context) or [self.prefix_token_id]
            generated: list[int] = []
            text = ""
            for _ in range(max_tokens):
                window = (tokens + generated)[-self.block_size:]
                logits = self.model(torch.tensor([window], device=self._device))[0, -1]
                next_token = int(logits.argmax())  # greedy: the harness's tasks score deterministic answers
                if next_token == self.eot_token_id:
                    break
                generated.append(next_token)
                text = self.tok_decode(generated)
                if any(stop in text for stop in stops):
                    break
            for stop in stops:
                text = text.split(stop)[0]
            outputs.append(text)
        return outputs
