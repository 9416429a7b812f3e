"""Every field the studio reads from a model folder or a policy file, checked in one place.

- `files`: regular files only (no pipes, folders, link loops), size caps, index paths that stay in the folder.
- `json_input`: JSON that is UTF-8, finite, not nested past 32 levels, not larger than any real one.
- `fields`: typed, ranged reads of one value (whole numbers are JSON integers: 4.0 is refused).
- `config`: every config.json field (text_config included) by type and range.
- `header`: safetensors header entries and tensor names.
- `tensors`: tensors against each other and the config (index, scales, experts, layers, embedding).
- `loadable`: what plain `mlx_lm.load` would accept (parameters, tokenizer), and its errors in one sentence.

Nothing here imports the rest of the core but `errors`, `dtypes` and `defaults`; the inventory, the
policy parser and the converter call in. `studio.core.check_model` is the entry every command uses.

(A regular package, not a namespace one: setuptools' package finder, and so the
wheel, leaves out folders without an `__init__.py`.)
"""
