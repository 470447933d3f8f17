"""Autograder for the attention and Vision Transformer homework."""
