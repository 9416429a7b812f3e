"""A compact policy with the same decisions: what Save writes.

Painting appends a rule per stroke, each listing its layers, so a session's
policy grows with every drag while its decisions stay simple. `compact` returns
the shortest of three candidates:

- the policy's own rules, tidied: rules that decide nothing dropped, each run of
  neighbours with the same roles and action made one, their layers written as
  `first`/`range` runs (a `list` only for layers that stand alone). Every cell
  (every role, in every row of the grid: outside the layers, the stack and any
  multi-token-prediction layers) keeps its decision, and a preset keeps its
  rules and notes;
- its rules up to the first that painting appended (a preset, a file), tidied,
  then what painting changed written afresh;
- where the policy has painted rules and that halves the count, every rule
  written afresh.

Written afresh means from the decisions of the cells that hold units (what the
model's tensors get; cells without units are free): per role, the rows whose
action changes, as `first`/`last`/`range` stretches (through free rows where
that helps; "all" where every row may have it) and a `list` only for layers
that stand alone; one rule for all the roles that change in the same rows the
same way, "*" or a group's name where it covers all of the model's roles or all
of the group's. From nothing, each role first gets the action that leaves the
fewest changes, for all layers. A rule that reads as one of the policy's keeps
its note.

Each candidate is checked cell by cell before it is chosen; if none matched (a
bug), the policy is returned as it is rather than saved wrong.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from studio.core.model.roles import ROLE_BY_KEY, ROLE_GROUPS, expand_roles, role_name
from studio.core.policy.bit_policy import Action, Keep, Layers, Policy, Rule
from studio.core.policy.grid import Grid
from studio.core.policy.grid_paint import FIT_NOTE, PAINT_NOTES, deciding_rules, same_decisions




def same_unit_decisions(a: Policy, b: Policy, grid: Grid) -> bool:
    """Both decide every cell that holds units the same: every tensor of the model gets the same."""
    n = grid.num_layers
    return all(a.decide(role, layer, n)[0] == b.decide(role, layer, n)[0] for role, layer in grid.cells)


def compact(policy: Policy, grid: Grid) -> Policy:
    """The shortest of: the policy's rules tidied; its rules up to the first painted one, then what
    painting changed; all rules written afresh, only where that halves the count (the others keep
    their author's rules, notes and order). Every tensor of the model keeps its decision."""
    best = tidied(policy, grid)
    if not same_decisions(best, policy, grid):
        best = policy
    candidate = based(policy, grid)
    if len(candidate.rules) < len(best.rules) and same_unit_decisions(candidate, policy, grid):
        best = candidate
    if not any(map(painted, policy.rules)):
        return best  # a preset or a file as it was written: its author's rules
    candidate = rewritten(policy, grid)
    if 2 * len(candidate.rules) <= len(best.rules) and same_unit_decisions(candidate, policy, grid):
        best = candidate
    return best


# ----- the policy's own rules, tidied -----


def _layer_set(layers: Layers) -> frozenset[int] | None:
    """The layer numbers a selector names, when that set does not depend on the model (else None)."""
    if layers.kind == "list":
        return frozenset(layers.items)
    if layers.kind == "range":
        return frozenset(range(layers.start, layers.stop + 1))
    if layers.kind == "first":
        return frozenset(range(layers.n))
    return None


def _exact(numbers) -> list[Layers]:
    """Layer numbers as selectors that mean them on any model: `first` or `range` for each run of two or
    more, one `list` for the layers that stand alone."""
    out, alone = [], []
    for start, stop in _runs(numbers):
        if start == stop:
            alone.append(start)
        else:
            out.append(Layers("first", n=stop + 1) if start == 0 else Layers("range", start=start, stop=stop))
    return out + ([Layers("list", items=tuple(alone))] if alone else [])


def tidied(policy: Policy, grid: Grid) -> Policy:
    """Rules that decide nothing dropped; each run of neighbouring rules with the same roles and action
    made one (their layers joined: nothing between them overrides), its layers written as runs."""
    deciding = deciding_rules(policy, grid)
    used = [rule for i, rule in enumerate(policy.rules) if i in deciding]
    out: list[Rule] = []
    i = 0
    while i < len(used):
        j = i
        while j + 1 < len(used) and (used[j + 1].roles, used[j + 1].action) == (used[i].roles, used[i].action):
            j += 1
        run = used[i:j + 1]
        note = next((r.note for r in run if r.note), "")
        if any(r.layers.kind == "all" for r in run):
            selectors = [Layers("all")]
        else:
            # In their first order, the layer numbers joined where the first of them stood.
            numbers = set().union(*(_layer_set(r.layers) or () for r in run))
            selectors, placed = [], False
            for rule in run:
                if _layer_set(rule.layers) is None:
                    if rule.layers not in selectors:
                        selectors.append(rule.layers)
                elif not placed:
                    selectors += _exact(numbers)
                    placed = True
        out += [Rule(run[0].roles, selector, run[0].action, note) for selector in selectors]
        i = j + 1
    return policy.with_rules(out)


# ----- written afresh from the decisions -----


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def _selectors(need: set, free: set, rows: tuple, num_layers: int) -> list[Layers]:
    """Few selectors that cover the rows `need` and no row outside `need` and `free` (`free`: rows
    where the action is harmless: no units there, or they have it already): "all" where that is
    every row; else "none" for the row outside the layers and, over the layers, each stretch of
    needed and free rows (trimmed to needed rows) as `first`, `last` or `range`, reaching through
    free rows to the stack's first or last layer where it can; the layers that stand alone in one
    `list`."""
    if all(row in need or row in free for row in rows):
        return [Layers("all")]
    out = [Layers("none")] if None in need else []
    layers = [r for r in rows if r is not None]
    stretches, current = [], []
    for layer in layers:
        if layer in need or layer in free:
            current.append(layer)
        else:
            stretches.append(current)
            current = []
    stretches.append(current)
    alone = []
    for stretch in stretches:
        needed = [i for i, layer in enumerate(stretch) if layer in need]
        if not needed:
            continue
        lo, hi = needed[0], needed[-1]
        if stretch[0] == layers[0]:
            lo = 0  # free rows down to the first layer: `first` says it
        if stretch[hi] < num_layers - 1 <= stretch[-1]:  # free rows (past `hi`) up to the last layer
            hi = stretch.index(num_layers - 1)
        start, stop = stretch[lo], stretch[hi]
        if start == stop:
            alone.append(start)
        elif start == layers[0] == 0:
            out.append(Layers("first", n=stop + 1))
        elif stop == num_layers - 1:
            out.append(Layers("last", n=stop - start + 1))
        else:
            out.append(Layers("range", start=start, stop=stop))
    if alone:
        out.append(Layers("list", items=tuple(alone)))
    return out


def _named(roles: set[str], present: set[str]) -> tuple[str, ...]:
    """Roles in ROLES order, "*" or a group's name where the rule may cover them all: every role of the
    model, or every role of the group the model has, is in `roles` (the others decide no tensor here)."""
    if present <= roles:
        return ("*",)
    left, names = set(roles), []
    for group, members in sorted(ROLE_GROUPS.items(), key=lambda g: -len(g[1])):
        here = set(members) & present
        if here and here <= left:
            names.append(group)
            left -= set(members)
    return (*names, *(role_name(r) for r in ROLE_BY_KEY if r in left))


def _changes(role: str, before: dict, after: dict, grid: Grid) -> dict[Action, list[Layers]]:
    """Selectors per action that turn `before` into `after` ({row: action} over the rows with units)."""
    free_rows = {layer for layer in grid.layers if layer not in after}
    out = {}
    for action in set(after.values()):
        need = {layer for layer, a in after.items() if a == action and before.get(layer) != action}
        if need:
            free = free_rows | {layer for layer, a in after.items() if a == action}
            out[action] = _selectors(need, free, grid.layers, grid.num_layers)
    return out


class _Rules:
    """Rules gathered per (action, selector), each for the roles that need it, then written in order."""

    def __init__(self, policy: Policy, grid: Grid):
        self.present = set(grid.roles)
        self.notes = {(r.roles, r.layers, r.action): r.note for r in policy.rules}  # written as it was: its note
        self.by_key: dict[tuple[Action, Layers], set[str]] = defaultdict(set)

    def add(self, role: str, action: Action, selectors) -> None:
        for selector in selectors:
            self.by_key[(action, selector)].add(role)

    def rules(self) -> list[Rule]:
        out = []
        for (action, selector), roles in self.by_key.items():
            named = _named(roles, self.present)
            out.append(Rule(named, selector, action, self.notes.get((named, selector, action), "")))
        return out


def _decided(policy: Policy, role: str, grid: Grid) -> dict:
    n = grid.num_layers
    return {layer: policy.decide(role, layer, n)[0] for layer in grid.layers if (role, layer) in grid.cells}


def rewritten(policy: Policy, grid: Grid) -> Policy:
    """Rules written from the decisions of the cells that hold units: for each role the action that
    leaves the fewest exceptions for all layers, then the exceptions."""
    defaults, exceptions = _Rules(policy, grid), _Rules(policy, grid)
    for role in grid.roles:
        after = _decided(policy, role, grid)
        counts = Counter(after.values())
        plans = {d: _changes(role, dict.fromkeys(after, d), after, grid) for d in counts}
        # The default that leaves the fewest selectors; a tie goes to the commoner action.
        default = min(plans, key=lambda d: (sum(map(len, plans[d].values())), -counts[d]))
        if default != Keep():  # what no rule decides is kept as it is: no rule needed
            defaults.add(role, default, [Layers("all")])
        for action, selectors in plans[default].items():
            exceptions.add(role, action, selectors)
    ordered = sorted(defaults.rules(), key=lambda r: -len(expand_roles(r.roles)))
    return policy.with_rules(ordered + exceptions.rules())


def painted(rule: Rule) -> bool:
    """A rule a stroke, a row or column set or Fit to budget appended (grid_paint's notes)."""
    return rule.note in PAINT_NOTES or rule.note.startswith(FIT_NOTE)


def based(policy: Policy, grid: Grid) -> Policy:
    """The rules before the first painted one, tidied, then what painting changed, written afresh."""
    first = next((i for i, rule in enumerate(policy.rules) if painted(rule)), len(policy.rules))
    base = tidied(policy.with_rules(policy.rules[:first]), grid)
    changes = _Rules(policy, grid)
    for role in grid.roles:
        for action, selectors in _changes(role, _decided(base, role, grid), _decided(policy, role, grid),
                                          grid).items():
            changes.add(role, action, selectors)
    return policy.with_rules([*base.rules, *changes.rules()])
