"""The large model: its kinds (HF classifier, CLIP vision tower, embedded), training, storage and output cache."""
