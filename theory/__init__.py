"""Worked theory answers for the attention / Vision Transformer homework.

``theory/answers/*.md`` are templates of the questions and their worked answers (format:
``theory/README.md``); ``theory.topics`` computes every value they show, ``theory.render`` fills
them in, ``theory.build`` renders the HTML page and the question sheet, ``theory.figure`` draws the figure.
"""
