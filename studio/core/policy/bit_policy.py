"""Bit policies: ordered rules from (roles, layers) to quantize, keep or drop.

Precedence is that of paint: rules apply in order and a later rule overrides an
earlier one for every unit it matches. A policy therefore reads top to bottom
as "start with this, then except for that". A unit no rule matches is kept as
it is in the source. The plan records, for every unit, the rule that decided.

Policies are stored as versioned, human-readable JSON (see `to_json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from studio.core.atomic_write import write_text_atomic
from studio.core.defaults import DEFAULT_GROUP_SIZE, MODES, default_group_size
from studio.core.errors import StudioError
from studio.core.model.roles import expand_roles
from studio.core.bundled import resource
from studio.core.validation.fields import is_whole, shown
from studio.core.validation.files import read_capped
from studio.core.validation.json_input import POLICY_BYTES, parse_json

FORMAT = "configi-studio.policy"
# Written beside every conversion, so the output says how it was made and can be remade.
OWN_POLICY_FILE = "configi_policy.json"
VERSION = 1

KEEP_CHOICES = ("source", "bfloat16", "float16", "float32")
# Far above any real policy (a rule per role and layer of a 60-layer model is ~2,000),
# low enough that a hostile file is refused at once instead of taking minutes to apply.
MAX_RULES = 10_000
MAX_NOTE = 1_000
MAX_TEXT = 10_000
MAX_LAYER_NUMBER = 100_000


@dataclass(frozen=True, slots=True)
class Quantize:
    bits: int
    group_size: int = DEFAULT_GROUP_SIZE
    mode: str = "affine"

    def label(self) -> str:
        suffix = "" if self.mode == "affine" else f" {self.mode}"
        return f"{self.bits}-bit g{self.group_size}{suffix}"


@dataclass(frozen=True, slots=True)
class Keep:
    dtype: str = "source"

    def label(self) -> str:
        return "keep" if self.dtype == "source" else {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}[self.dtype]


@dataclass(frozen=True, slots=True)
class Drop:
    def label(self) -> str:
        return "drop"


Action = Quantize | Keep | Drop


@dataclass(frozen=True, slots=True)
class Layers:
    """Which layers a rule covers. Units outside any layer (embeddings, lm_head,
    final norm, vision) match only "all" and "none"."""

    kind: str = "all"  # all | none | first | last | range | list | mlx_more_bits
    n: int = 0
    start: int = 0
    stop: int = 0
    items: tuple[int, ...] = ()

    def matches(self, layer: int | None, num_layers: int) -> bool:
        kind = self.kind
        if kind == "all":
            return True
        if layer is None:
            return kind == "none"
        if kind == "first":
            return layer < self.n
        if kind == "last":
            return num_layers - self.n <= layer < num_layers
        if kind == "range":
            return self.start <= layer <= self.stop
        if kind == "list":
            return layer in self.items
        if kind == "mlx_more_bits":
            # mlx-lm's mixed-recipe layers (convert.py, use_more_bits): the first and
            # last eighth, and every third layer in between.
            eighth = num_layers // 8
            return layer < eighth or layer >= 7 * num_layers // 8 or (layer - eighth) % 3 == 2
        return False

    def to_json(self):
        if self.kind in ("all", "none", "mlx_more_bits"):
            return self.kind
        if self.kind in ("first", "last"):
            return {self.kind: self.n}
        if self.kind == "range":
            return {"range": [self.start, self.stop]}
        return {"list": list(self.items)}

    def label(self) -> str:
        return {
            "all": "all layers", "none": "outside layers", "mlx_more_bits": "mlx-lm's more-bits layers",
            "first": f"first {self.n}", "last": f"last {self.n}",
            "range": f"layers {self.start}-{self.stop}", "list": "layers " + ", ".join(map(str, self.items)),
        }[self.kind]


@dataclass(frozen=True)
class Rule:
    roles: tuple[str, ...]
    layers: Layers
    action: Action
    note: str = ""
    role_keys: frozenset = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "role_keys", expand_roles(self.roles))

    def matches(self, role: str, layer: int | None, num_layers: int) -> bool:
        return role in self.role_keys and self.layers.matches(layer, num_layers)

    def label(self) -> str:
        return f"{', '.join(self.roles)} @ {self.layers.label()} -> {self.action.label()}"


@dataclass(frozen=True)
class Policy:
    name: str
    rules: tuple[Rule, ...]
    description: str = ""
    warning: str = ""

    def with_rules(self, rules, name: str | None = None) -> "Policy":
        return replace(self, rules=tuple(rules), name=name or self.name)

    def decide(self, role: str, layer: int | None, num_layers: int) -> tuple[Action, int | None]:
        """The action for one role and layer, and the index of the rule that chose it."""
        for index in range(len(self.rules) - 1, -1, -1):
            if self.rules[index].matches(role, layer, num_layers):
                return self.rules[index].action, index
        return Keep(), None

    # ----- JSON -----

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "description": self.description,
            "warning": self.warning,
            "rules": [_rule_to_dict(r) for r in self.rules],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        """Written beside `path` and moved over it: a failed write (a full disk) leaves what was there."""
        path = Path(path)
        try:
            write_text_atomic(path, self.to_json())
        except OSError as exc:
            raise StudioError(f"cannot write the policy to {path}: {exc.strerror or exc}.") from None


def _action_to_json(action: Action):
    if isinstance(action, Quantize):
        return {"quantize": {"bits": action.bits, "group_size": action.group_size, "mode": action.mode}}
    if isinstance(action, Keep):
        return {"keep": action.dtype}
    return "drop"


def _rule_to_dict(rule: Rule) -> dict:
    out = {"roles": list(rule.roles), "layers": rule.layers.to_json(), "action": _action_to_json(rule.action)}
    if rule.note:
        out["note"] = rule.note
    return out


# ----- parsing, with errors that say where -----


class _Where:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str):
        raise StudioError(f"{self.source}: {where}: {problem}")


def _layer_number(a) -> bool:
    return is_whole(a) and 0 <= a <= MAX_LAYER_NUMBER


def parse_layers(value, where: str, ctx: _Where) -> Layers:
    if isinstance(value, str) and value in ("all", "none", "mlx_more_bits"):
        return Layers(value)
    if isinstance(value, dict) and len(value) == 1:
        (kind, arg), = value.items()
        if kind in ("first", "last") and _layer_number(arg):
            return Layers(kind, n=arg)
        if kind == "range" and isinstance(arg, list) and len(arg) == 2 and all(_layer_number(a) for a in arg):
            if arg[0] > arg[1]:
                ctx.fail(where, f"range {arg} starts after it stops")
            return Layers("range", start=arg[0], stop=arg[1])
        if kind == "list" and isinstance(arg, list) and len(arg) <= MAX_LAYER_NUMBER and \
                all(_layer_number(a) for a in arg):
            return Layers("list", items=tuple(sorted(set(arg))))
    ctx.fail(where, f"layers must be \"all\", \"none\", {{\"first\": N}}, {{\"last\": N}}, "
                    f"{{\"range\": [A, B]}} or {{\"list\": [...]}} with layer numbers up to {MAX_LAYER_NUMBER:,}, "
                    f"not {shown(value)}")


def parse_action(value, where: str, ctx: _Where) -> Action:
    if isinstance(value, str) and value == "drop":
        return Drop()
    if isinstance(value, dict) and len(value) == 1:
        (kind, arg), = value.items()
        if kind == "keep":
            if not isinstance(arg, str) or arg not in KEEP_CHOICES:
                ctx.fail(where, f"keep must be one of {', '.join(KEEP_CHOICES)}, not {shown(arg)}")
            return Keep(arg)
        if kind == "quantize" and isinstance(arg, dict):
            unknown = set(arg) - {"bits", "group_size", "mode"}
            if unknown:
                ctx.fail(where, f"unknown quantize setting {sorted(unknown)[0]!r}")
            mode = arg.get("mode", "affine")
            if not isinstance(mode, str) or mode not in MODES:
                ctx.fail(where, f"mode must be one of {', '.join(MODES)}, not {shown(mode)}")
            limits = MODES[mode]
            bits = arg.get("bits", limits["bits"][-1] if mode != "affine" else None)
            group = arg.get("group_size", default_group_size(mode))
            # Whole JSON numbers only: 4.0 == 4 in Python, but mx.quantize refuses a float.
            if not is_whole(bits) or bits not in limits["bits"]:
                ctx.fail(where, f"{mode} takes bits {', '.join(map(str, limits['bits']))}, "
                                f"not {shown(bits)}")
            if not is_whole(group) or group not in limits["group_sizes"]:
                ctx.fail(where, f"{mode} takes group size {', '.join(map(str, limits['group_sizes']))}, "
                                f"not {shown(group)}")
            return Quantize(bits, group, mode)
    ctx.fail(where, f"action must be {{\"quantize\": {{...}}}}, {{\"keep\": DTYPE}} or \"drop\", not {shown(value)}")


def policy_from_dict(data, source: str = "policy") -> Policy:
    ctx = _Where(source)
    if not isinstance(data, dict):
        ctx.fail("top level", "a policy must be a JSON object")
    if data.get("format", FORMAT) != FORMAT:
        ctx.fail("format", f"expected {FORMAT!r}, found {shown(data.get('format'))}")
    version = data.get("version", VERSION)
    if not is_whole(version) or version != VERSION:
        ctx.fail("version", f"this studio reads policy version {VERSION}, the file is version {shown(version)}")
    for key, limit in (("name", 200), ("description", MAX_TEXT), ("warning", MAX_TEXT)):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            ctx.fail(key, f"must be a text of at most {limit:,} characters")
    rules_data = data.get("rules")
    if not isinstance(rules_data, list) or not rules_data:
        ctx.fail("rules", "a policy needs a non-empty list of rules")
    if len(rules_data) > MAX_RULES:
        ctx.fail("rules", f"{len(rules_data):,} rules; a policy may have at most {MAX_RULES:,}")
    rules = []
    for i, item in enumerate(rules_data, start=1):
        where = f"rule {i}"
        if not isinstance(item, dict):
            ctx.fail(where, "each rule must be a JSON object")
        unknown = set(item) - {"roles", "layers", "action", "note"}
        if unknown:
            ctx.fail(where, f"unknown key {sorted(unknown)[0]!r}")
        roles = item.get("roles")
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, list) or not roles or len(roles) > 100 or not all(isinstance(r, str) for r in roles):
            ctx.fail(where, "roles must be a non-empty list of role or group names")
        try:
            expand_roles(roles)
        except KeyError as exc:
            ctx.fail(where, f"unknown role {exc.args[0]!r}")
        layers = parse_layers(item.get("layers", "all"), where, ctx)
        if "action" not in item:
            ctx.fail(where, "missing action")
        action = parse_action(item["action"], where, ctx)
        note = item.get("note", "")
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            ctx.fail(where, f"note must be a text of at most {MAX_NOTE:,} characters")
        rules.append(Rule(tuple(roles), layers, action, note))
    return Policy(str(data.get("name", "Custom")), tuple(rules), str(data.get("description", "")),
                  str(data.get("warning", "") or ""))


def load_policy_file(path: str | Path) -> Policy:
    path = Path(path)
    data = parse_json(read_capped(path, "policy file", POLICY_BYTES), f"policy file {path.name}")
    return policy_from_dict(data, path.name)


# ----- presets -----

PRESET_NAMES = ("config-i", "uniform-2bit", "uniform-4bit", "uniform-8bit", "mixed-2-6", "mixed-3-6", "mixed-4-6")
DEFAULT_PRESET = "config-i"


def _preset_dir():
    return resource("presets")


def load_preset(name: str) -> Policy:
    if name not in PRESET_NAMES:
        raise StudioError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)} or give a policy file.")
    text = (_preset_dir() / f"{name}.json").read_text()
    return policy_from_dict(json.loads(text), f"preset {name}")


def resolve_policy(spec: str | None) -> Policy:
    """A preset name or a policy file path, as the command line and the window accept them."""
    if not spec:
        return load_preset(DEFAULT_PRESET)
    if spec in PRESET_NAMES:
        return load_preset(spec)
    if spec.endswith(".json") or Path(spec).exists():
        return load_policy_file(spec)
    raise StudioError(f"unknown preset {spec!r}; choose one of {', '.join(PRESET_NAMES)} or give a policy file.")
