"""Student template of the attention and Vision Transformer homework.

Fill in the parts marked TODO in attention.py, blocks.py and vit.py; data.py, training.py,
configs.py and plotting.py are provided and need no change.
"""
