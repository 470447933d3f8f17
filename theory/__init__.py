"""Worked theory answers for the attention / Vision Transformer homework.

``theory/answers/*.md`` holds the questions and their worked answers (format: ``theory/README.md``);
``theory.markers`` reads that format, ``theory.facts`` recomputes every checked number,
``theory.build`` renders the HTML page and the question sheet, ``theory.figure`` draws the figure.
"""
