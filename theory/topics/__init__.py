"""One module per topic template: ``values()`` computes everything its template shows.

A module declares its inputs (the numbers a question gives) as constants, computes the rest from
them with torch, numpy or sympy, and returns one flat dict; the template refers to its keys.
"""
from __future__ import annotations

import importlib

from torch import nn

TOPICS = {
    "01-attention.md": "attention",
    "02-attention-by-hand.md": "by_hand",
    "03-scaled-dot-product-and-softmax.md": "scaling",
    "04-multi-head-and-self-attention.md": "multi_head",
    "05-transformer-and-vit.md": "vit",
    "06-convolution-and-pooling.md": "convolution",
}


def values_for(template: str) -> dict[str, object]:
    """The values of the topic template called ``template`` (e.g. ``"02-attention-by-hand.md"``)."""
    if template not in TOPICS:
        raise KeyError(f"no topic module for {template}; add it to theory.topics.TOPICS")
    return importlib.import_module(f"theory.topics.{TOPICS[template]}").values()


def count(module: nn.Module) -> int:
    """Parameters of ``module`` (also on the "meta" device: counted, not allocated)."""
    return sum(p.numel() for p in module.parameters())
