"""The build step of a course: the student template and its notebooks generated from the
reference, and the archives handed out (``make template``, ``make handout``). Nothing here runs
while grading."""
