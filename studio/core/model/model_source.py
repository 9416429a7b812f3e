"""Where a model's bytes come from: a folder on this disk, or a repo on the Hugging Face Hub.

(`studio.core.project.open_inventory` picks one from what the user typed.)

A source gives the inventory its config and shard headers, the converter a
reader of byte ranges, the resume record an identity (what makes two runs
"the same source"), and the model card the words that name it. The Hub
source lives in `studio.core.hub.source`; it downloads config.json and the
tokenizer files into the standard huggingface_hub cache, whose snapshot
folder is the inventory's `root`, and reads everything else by range.
"""

from __future__ import annotations

from pathlib import Path

from studio.core.model.dequantize import SourceReader


class FolderSource:
    """A Hugging Face style model folder (or an MLX one) on this disk."""

    base_model: str | None = None  # a Hub repo id, for the card's metadata
    remote = False  # its weights are on this disk

    def __init__(self, root: Path):
        self.root = root

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def label(self) -> str:
        """How the window and the command line name it."""
        return str(self.root)

    @property
    def card_source(self) -> str:
        """How the output's model card names it (and the argument that reproduces the conversion)."""
        return str(self.root)

    def reader(self) -> SourceReader:
        return SourceReader(self.root)

    def identity(self, shards: list[str]) -> str:
        """Changes whenever a shard file changes: a resume only reuses shards made from the same bytes."""
        parts = []
        for name in shards:
            stat = (self.root / name).stat()
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
        return ";".join(parts)
