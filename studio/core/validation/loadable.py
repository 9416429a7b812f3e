"""Would plain `mlx_lm.load` accept this? Checked without reading a single weight.

- `check_parameters(config, tensors)`: builds mlx-lm's model class for the
  config lazily (MLX allocates nothing until evaluated), quantizes it as
  `mlx_lm.utils.load_model` does, runs the class's `sanitize` over lazy
  placeholders of the tensors and compares names and shapes as its strict
  `load_weights` would. The converter runs it on the planned output before
  writing anything, so a missing tensor, a missing expert or a layer count that
  does not match is refused at once, not after hours.
- `check_tokenizer(folder)`: loads the tokenizer as mlx-lm does, never running
  code from the folder.
- `one_sentence(exc)`: an mlx-lm or transformers error as one short sentence
  (mlx's strict load lists every parameter, one per line).
"""

from __future__ import annotations

import re
from pathlib import Path

from studio.core.errors import StudioError
from studio.core.validation.files import check_regular
from studio.core.validation.json_input import TOKENIZER_CONFIG_BYTES, read_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model", "spiece.model")
_MX_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float32", "U32": "uint32",
              "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "I32": "int32", "U64": "uint64",
              "I64": "int64", "BOOL": "bool_", "F8_E4M3": "uint8", "F8_E5M2": "uint8", "F8_E8M0": "uint8"}


def one_sentence(exc: BaseException, limit: int = 200) -> str:
    """The gist of an error from a library, on one line."""
    text = str(exc).strip() or type(exc).__name__
    counted = re.match(r"(Received|Missing) (\d+) parameters[^:]*:\s*([^,\n]+)", text)
    if counted:
        kind, count, first = counted.groups()
        what = "parameters the model does not have" if kind == "Received" else "missing parameters"
        return f"{count} {what} (first: {first.strip().rstrip('.')})"
    line = text.splitlines()[0].strip()
    return line if len(line) <= limit else line[:limit - 3] + "..."


# --------------------------------------------------------------------------- tokenizer


def tokenizer_files(folder: Path) -> list[Path]:
    found = [folder / n for n in TOKENIZER_FILES if (folder / n).exists()]
    return found + sorted(folder.glob("*.tiktoken"))


def check_tokenizer_config(folder: Path) -> dict:
    """tokenizer_config.json, if any, must be a JSON object that asks for no code from the folder."""
    path = folder / "tokenizer_config.json"
    if not path.exists() and not path.is_symlink():
        return {}
    data = read_json(path, "tokenizer config", TOKENIZER_CONFIG_BYTES)
    if not isinstance(data, dict):
        raise StudioError(f"{path} is not a JSON object.")
    auto_map = data.get("auto_map")
    if auto_map and (not isinstance(auto_map, dict) or "AutoTokenizer" in auto_map):
        raise StudioError(f"the tokenizer in {folder} needs its own Python code (auto_map in tokenizer_config.json); "
                          "the studio never runs code from a model folder.")
    return data


def check_tokenizer_files(folder: Path) -> None:
    """A tokenizer is there, in regular files, and asks for no code from the folder (cheap: nothing parsed
    but tokenizer_config.json)."""
    folder = Path(folder)
    check_tokenizer_config(folder)
    files = tokenizer_files(folder)
    if not files:
        raise StudioError(f"{folder} has no tokenizer (tokenizer.json or tokenizer.model); a model needs one.")
    for path in files:
        check_regular(path, "tokenizer file")


def check_tokenizer(folder: Path, shown_as=None) -> None:
    """Load the folder's tokenizer as mlx-lm will, without remote code; one sentence (naming `shown_as`,
    the folder it came from) if it cannot."""
    folder = Path(folder)
    check_tokenizer_files(folder)
    from mlx_lm.tokenizer_utils import load

    try:
        load(folder)
    except Exception as exc:  # any failure inside transformers: corrupt files, unknown classes
        raise StudioError(f"the tokenizer of {shown_as or folder} cannot be loaded: {one_sentence(exc)}.") from None


# --------------------------------------------------------------------------- parameters


def _placeholder(shape, dtype: str):
    import mlx.core as mx

    return mx.zeros(shape, dtype=getattr(mx, _MX_DTYPES.get(dtype, "float32")))  # lazy: never allocated


def _build(config: dict):
    """mlx-lm's model for `config`, quantized as its config says, parameters lazy."""
    from studio.core.mlx_classes import model_classes

    try:
        model_class, args_class = model_classes(config)
    except (ValueError, KeyError, TypeError):  # unknown, missing or odd model_type
        raise StudioError(f"mlx-lm has no model type {config.get('model_type')!r}, so it could not load the "
                          "output.") from None
    try:
        return model_class(args_class.from_dict(config))
    except Exception as exc:  # a missing or odd field the model class needs
        raise StudioError(f"mlx-lm cannot build a {config.get('model_type')} model from this config.json: "
                          f"{one_sentence(exc)}.") from None


def check_parameters(config: dict, tensors: dict[str, tuple[tuple[int, ...], str]], what: str) -> None:
    """Refuse unless mlx-lm's strict load would accept `tensors` (name -> (shape, dtype)) under `config`."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.utils import infer_quant_config

    model = _build(config)
    weights = {name: _placeholder(shape, dtype) for name, (shape, dtype) in tensors.items()}
    try:
        if hasattr(model, "sanitize"):
            weights = model.sanitize(weights)
        quantization = config.get("quantization")
        if quantization is not None:
            def predicate(path, module):
                scales = weights.get(f"{path}.scales")
                if scales is not None and hasattr(module, "weight"):
                    # The widths must divide before MLX divides by them (a zero group size is a
                    # SIGFPE inside mx.quantize, not an exception).
                    inputs = module.weight.shape[-1]
                    if not scales.shape[-1] or inputs % scales.shape[-1] or inputs < scales.shape[-1]:
                        raise StudioError(f"{what}: {path} would have {scales.shape[-1]} scale columns, which do "
                                          f"not fit the {inputs} inputs mlx-lm's model gives it.")
                if path in quantization:
                    return quantization[path]
                if not hasattr(module, "to_quantized") or scales is None:
                    return False
                return infer_quant_config(path, module, weights)

            nn.quantize(model, group_size=quantization["group_size"], bits=quantization["bits"],
                        mode=quantization.get("mode", "affine"), class_predicate=predicate)
    except StudioError:
        raise
    except Exception as exc:
        raise StudioError(f"mlx-lm would not load {what}: {one_sentence(exc)}.") from None
    expected = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters(), destination={}).items()}
    given = {k: tuple(v.shape) for k, v in weights.items()}
    missing = sorted(expected.keys() - given.keys())
    if missing:
        raise StudioError(f"{what} would lack {len(missing)} parameter(s) mlx-lm's {config.get('model_type')} model "
                          f"needs (first: {missing[0]}).")
    extra = sorted(given.keys() - expected.keys())
    if extra:
        raise StudioError(f"{what} would hold {len(extra)} tensor(s) mlx-lm's {config.get('model_type')} model has "
                          f"no place for (first: {extra[0]}).")
    for name, shape in expected.items():
        if given[name] != shape:
            raise StudioError(f"{what}: {name} would be {list(given[name])}, but mlx-lm's model expects "
                              f"{list(shape)}.")
