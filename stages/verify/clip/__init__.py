"""CLIP verification backend: open_clip ViT networks from local weights, tokenizer, scoring."""
