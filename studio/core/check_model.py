"""The one entry every command that opens a model goes through first.

inspect, estimate, fit, convert and the window open a model with
`Project.open`, which reads and checks every header, config field, index entry
and policy (`studio.core.validation`). chat and eval load the model with
mlx-lm afterwards; they call `check_model(path, loadable=True)` first, so a
folder the studio would refuse never reaches mlx-lm, and add the checks a load
needs on top: a tokenizer that exists and asks for no code from the folder.
"""

from __future__ import annotations

from studio.core.project import Project
from studio.core.validation.loadable import check_tokenizer_files


def check_model(path, *, loadable: bool = False, policy=None) -> Project:
    """The opened model, or one sentence saying why it cannot be opened (or loaded, with `loadable`)."""
    project = Project.open(path, policy)
    if loadable:
        check_tokenizer_files(project.inventory.root)
    return project
