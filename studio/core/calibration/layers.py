"""One decoder layer at a time: mlx-lm's own model classes, weights read from the source.

`Skeleton` instantiates the model class mlx-lm would load for the source's
config, lazily: its parameters are unevaluated random initialisers that hold
no memory. `load_layer(i)` reads layer i's units from the source (dequantized
with the converter's code), puts probes in place of its Linear and
SwitchLinear modules and loads everything else (norms, biases, router bias) in
float32; `free_layer(i)` drops it again. Only layer i's weights are ever in
memory, plus the embedding or head while those run.

Loading is strict: every parameter of the layer must come from the source. A
parameter the checkpoint does not cover is an error, never the model class's
random initial value.

What each layer is called with (its attention mask above all: gpt-oss
alternates sliding-window and full attention, DeepSeek-V3 wants the mask as an
array) is not rebuilt here: `embed` runs the model's own `__call__` once with
stand-ins for its layers that record the arguments each receives, so the
streamed pass calls layer i exactly as the model would.
"""

from __future__ import annotations

from collections import defaultdict

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from studio.core.calibration.probes import LinearProbe, SwitchProbe, is_linear, is_switch
from studio.core.errors import StudioError
from studio.core.project import Project
from studio.core.model.unit_source import read_unit_rows, unit_values
from studio.core.model.unit import Unit


def _get(module, path: str):
    for part in path.split("."):
        module = module[int(part)] if isinstance(module, list) else getattr(module, part)
    return module


def set_submodule(module, path: str, value) -> None:
    parent, _, leaf = path.rpartition(".")
    owner = _get(module, parent) if parent else module
    if isinstance(owner, list):
        owner[int(leaf)] = value
    else:
        setattr(owner, leaf, value)


def _rows(unit: Unit) -> int:
    return unit.shape[0] if len(unit.shape) >= 2 else 1


class LayerCall:
    """The arguments the model's own `__call__` passed one decoder layer, besides its hidden states."""

    def __init__(self, args: tuple, kwargs: dict, batch: int):
        self.args, self.kwargs, self.batch = args, kwargs, batch

    def __call__(self, layer, x: mx.array, rows=0) -> mx.array:
        """`layer` on x, the hidden states of corpus sequences `rows`: an index array, or the first
        one's index (the rest follow in order)."""
        def part(value):
            # A per-sequence argument (a padding mask [B, 1, L, L], say) is cut to the sequences
            # of x; the usual [L, L] mask or "causal" broadcasts over any batch as it is.
            if isinstance(value, mx.array) and value.ndim >= 3 and value.shape[0] == self.batch > 1:
                index = np.arange(rows, rows + x.shape[0]) if np.isscalar(rows) else np.asarray(rows)
                return value[mx.array(index)]
            return value

        return layer(x, *(part(a) for a in self.args), **{k: part(v) for k, v in self.kwargs.items()})


class _Recorder:
    """Stands in for a decoder layer while the model's `__call__` runs: records what it is called
    with and passes its input through. Attribute reads go to the real layer (llama asks each
    layer whether it slides)."""

    def __init__(self, layer, batch: int):
        self._layer, self._batch = layer, batch
        self.input: mx.array | None = None
        self.call: LayerCall | None = None

    def __getattr__(self, name):
        return getattr(self._layer, name)

    def __call__(self, x, *args, **kwargs):
        self.input = x
        self.call = LayerCall(args, kwargs, self._batch)
        return x


def _missing_sentence(what: str, missing: list[str]) -> str:
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return (f"the checkpoint has no {shown} for {what}, which mlx-lm's model needs; calibration stops "
            "rather than run it with made-up values.")


class Skeleton:
    def __init__(self, project: Project):
        from studio.core.mlx_classes import model_classes

        self.project = project
        inventory = project.inventory
        config = dict(inventory.config)
        try:
            model_class, args_class = model_classes(config)
            self.model = model_class(args_class.from_dict(config))
        except Exception as exc:  # an architecture mlx-lm does not know
            raise StudioError(f"mlx-lm cannot build a {inventory.model_type or 'model'} of this config to "
                              f"calibrate ({exc}).") from None
        self.reader = inventory.source.reader()
        self.reader.holds_rows = True  # a layer's expert rows, freed a projection at a time
        units = project.units
        embedding = [u for u in units if u.role == "embedding" and u.kind == "module"]
        if not embedding:
            raise StudioError("calibration needs the model's token embedding; this model has none.")
        self.embedding = embedding[0]
        self.prefix = self.embedding.path.rpartition(".")[0]  # e.g. language_model.model
        self.text = _get(self.model, self.prefix)
        heads = [u for u in units if u.role == "lm_head" and u.kind == "module"]
        self.head = heads[0] if heads else None
        head_names = [n for n, _ in tree_flatten(self.model.parameters()) if n.endswith("lm_head.weight")]
        if head_names and self.head is None:
            raise StudioError(_missing_sentence("the output head", head_names))
        self.num_layers = project.num_layers
        self.by_layer: dict[int, list[Unit]] = defaultdict(list)
        for unit in units:
            if unit.layer is not None and unit.layer < self.num_layers and \
                    unit.path.startswith(f"{self.prefix}.layers.{unit.layer}."):
                self.by_layer[unit.layer].append(unit)
        self.probes: dict[str, LinearProbe | SwitchProbe] = {}

    def values(self, unit: Unit) -> mx.array:
        """The whole unit's values, dequantized, in the source's float dtype."""
        return unit_values(unit, read_unit_rows(self.reader, self.project.inventory, unit, 0, _rows(unit)))

    # ------------------------------------------------------------------ ends

    def embed(self, tokens: mx.array, table: mx.array | None = None) -> tuple[mx.array, list[LayerCall]]:
        """(the first layer's input in float32, what each layer is called with), from the model's
        own `__call__` over `tokens` [sequences, length] with recorders in place of its layers
        (they pass their input through, so no layer runs and the final norm is never evaluated).
        `table`: an embedding table to use instead of the source's (the tokens index it)."""
        layers = self.text.layers
        recorders = [_Recorder(layer, tokens.shape[0]) for layer in layers]
        self.text.embed_tokens.weight = self.values(self.embedding) if table is None else table
        self.text.layers = recorders
        try:
            self.text(tokens)
        finally:
            self.text.layers = layers
        h = recorders[0].input.astype(mx.float32)
        mx.eval(h)
        self.text.embed_tokens.weight = mx.zeros((1, 1))
        if any(r.call is None for r in recorders):
            raise StudioError(f"mlx-lm's {self.project.inventory.model_type} model skipped some of its layers "
                              "on the calibration tokens; calibration cannot follow it one layer at a time.")
        return h, [r.call for r in recorders]

    def final_norm(self, h: mx.array) -> mx.array:
        norm = self.text.norm
        by_path = {u.path: u for u in self.project.units}
        names = [name for name, _ in tree_flatten(norm.parameters())]
        missing = [f"{self.prefix}.norm.{n}" for n in names if f"{self.prefix}.norm.{n}" not in by_path]
        if missing:
            raise StudioError(_missing_sentence("the final norm", missing))
        norm.update(tree_unflatten([(n, self.values(by_path[f"{self.prefix}.norm.{n}"]).astype(mx.float32))
                                    for n in names]))
        return norm(h)

    # ------------------------------------------------------------------ layers

    def layer(self, index: int):
        return self.text.layers[index]

    def load_layer(self, index: int) -> dict[str, LinearProbe | SwitchProbe]:
        """Install layer `index`'s weights and probes; returns its probes by unit path."""
        layer = self.layer(index)
        expected = {name for name, _ in tree_flatten(layer.parameters())}
        base = f"{self.prefix}.layers.{index}."
        units = self.by_layer.get(index, [])
        biases = {u.path[: -len(".bias")]: u for u in units if u.kind == "tensor" and u.path.endswith(".bias")}
        probes: dict[str, LinearProbe | SwitchProbe] = {}
        plain: list[tuple[str, mx.array]] = []
        consumed: set[str] = set()
        covered: set[str] = set()
        for unit in units:
            if unit.kind != "module":
                continue
            rel = unit.path[len(base):]
            try:
                module = _get(layer, rel)
            except (AttributeError, IndexError, KeyError, ValueError):
                module = None
            bias_unit = biases.get(unit.path)
            if is_linear(module) or is_switch(module):
                bias = self.values(bias_unit) if bias_unit is not None else None
                consumed |= {bias_unit.path} if bias_unit is not None else set()
                if is_linear(module):
                    probe = LinearProbe(unit, self.values(unit), bias)
                else:
                    parts = [read_unit_rows(self.reader, self.project.inventory, unit, e, e + 1)
                             for e in range(unit.shape[0])]
                    probe = SwitchProbe(unit, parts, bias)
                set_submodule(layer, rel, probe)
                probes[unit.path] = probe
                covered |= {f"{rel}.weight"} | ({f"{rel}.bias"} if bias is not None else set())
            else:  # a module kind the probes do not cover: loaded as it is, measured by nobody
                plain.append((f"{rel}.weight", self.values(unit).astype(mx.float32)))
        for unit in units:
            if unit.kind == "tensor" and unit.path not in consumed:
                value = self.values(unit)
                if mx.issubdtype(value.dtype, mx.floating):
                    value = value.astype(mx.float32)
                plain.append((unit.path[len(base):], value))
        covered |= {name for name, _ in plain}
        missing = sorted(expected - covered)
        if missing:
            raise StudioError(_missing_sentence(f"layer {index}", [base + name for name in missing]))
        layer.update(tree_unflatten(plain), strict=False)
        mx.eval(layer.parameters())
        self.probes.update(probes)
        return probes

    def free_layer(self, index: int) -> None:
        self.text.layers[index] = nn.Module()
        self.probes = {}
        mx.clear_cache()

    def head_weight(self) -> mx.array:
        if self.head is not None:
            return self.values(self.head)
        return self.values(self.embedding)  # tied
