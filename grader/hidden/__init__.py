"""The hidden checks, one pytest test per check (see ``grader.checklib`` for how to write one)."""
