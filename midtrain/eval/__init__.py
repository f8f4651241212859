"""Evaluation after training: per-domain loss over checkpoints, named validation sets (SFT JSON, token shards),
lm-evaluation-harness tasks, and the distribution-similarity ("bridge") analysis."""
