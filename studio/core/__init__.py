"""The Qt-free core: inventory, roles, policy, plan, estimate, convert, generate, evaluate.

Nothing in this package may import Qt; a test and an import-linter contract keep it so.
"""
