"""The Hugging Face Hub as a source and a destination, through the real huggingface_hub client.

- `refs`: `org/name[@revision]`, HF_ENDPOINT, and one sentence per way a Hub call fails.
- `ranged`: byte ranges over HTTP, several in flight, retried, length-checked.
- `remote`: a revision pinned to its commit; config, tokenizer files and shard headers.
- `source`: a Hub repo as an inventory source and the converter's reader; `--keep-source`.
- `publish`: check a converted folder and upload it.
"""
