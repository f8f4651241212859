"""Evaluation after training: per-domain loss over checkpoints, named validation sets (SFT JSON, token shards) and
lm-evaluation-harness tasks. The similarity ("bridge") analysis is in ``midtrain.analysis``."""
