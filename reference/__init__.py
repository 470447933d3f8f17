"""Reference solution of the attention and Vision Transformer homework."""
