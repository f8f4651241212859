"""How alike corpora are (n-gram and hidden-state similarity) and the bridge between pretraining and SFT data."""
