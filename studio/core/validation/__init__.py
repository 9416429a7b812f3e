"""Checks on everything read from a model folder or a policy file, each refusal one sentence.

(A regular package, not a namespace one: setuptools' package finder, and so the
wheel, leaves out folders without an `__init__.py`.)
"""
