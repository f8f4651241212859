"""``midtrain export``: checkpoints as Hugging Face model folders, with a model card that carries their lineage."""
