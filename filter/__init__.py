"""The filter stage: CLIP scoring, caption filling, embeddings (see filter/stage.py)."""
