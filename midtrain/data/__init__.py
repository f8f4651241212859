"""Data: shard discovery, mixture spec and plan, the exact mixed stream and the ``ShardedMixedDataset`` module.

``ShardedMixedDataset`` is imported lazily so that pure planning (``midtrain mix``) does not load torch.
"""

from midtrain.data.mixture import MixtureArgs

__all__ = ["MixtureArgs", "ShardedMixedDataset"]


def __getattr__(name: str):
    if name == "ShardedMixedDataset":
        from midtrain.data.module import ShardedMixedDataset

        return ShardedMixedDataset
    raise AttributeError(name)
