"""An open model with a policy: the object the command line and the window share.

Opening does the costly part once (headers, units, source sizes); changing the
policy only re-decides the units and re-sums their sizes, which takes a few
milliseconds even for MiniMax-M3.
"""

from __future__ import annotations

import os

from studio.core.policy.estimate import Estimate, SourceSizes, estimate
from studio.core.policy.grid import Grid, grid_of
from studio.core.model.inventory import Inventory, open_model
from studio.core.hub.refs import hub_ref
from studio.core.hub.source import open_hub_inventory
from studio.core.memory import MemoryFit, default_context, memory_fit
from studio.core.policy.plan import Plan, make_plan
from studio.core.policy.bit_policy import OWN_POLICY_FILE, Policy, resolve_policy
from studio.core.policy.suitability import policy_warnings
from studio.core.model.units import build_units



def open_inventory(text: str | os.PathLike):
    """The inventory of a local folder, or of a Hub repo when `text` is `org/name[@revision]`
    and no such local path exists."""
    ref = hub_ref(str(text))
    if ref is None:
        return open_model(text)
    return open_hub_inventory(ref)


class Project:
    def __init__(self, inventory: Inventory, policy: Policy):
        self.inventory = inventory
        self.units, self.architecture = build_units(inventory)
        self.source_sizes: SourceSizes | None = None
        self.set_policy(policy)
        self.grid: Grid = grid_of(self.units, self.plan.num_layers)

    @classmethod
    def open(cls, path, policy: str | Policy | None = None) -> "Project":
        """Open `path` under `policy`; with none given, a studio output starts from the
        policy it was made with (its `configi_policy.json`), anything else from Config-I."""
        if not isinstance(policy, Policy):
            resolve_policy(policy)  # a bad policy fails before a Hub repo is fetched
        inventory = open_inventory(path)
        if policy is None and os.path.lexists(inventory.root / OWN_POLICY_FILE):  # a broken link is refused, not skipped
            policy = str(inventory.root / OWN_POLICY_FILE)
        policy = policy if isinstance(policy, Policy) else resolve_policy(policy)
        return cls(inventory, policy)

    def set_policy(self, policy: Policy) -> Estimate:
        self.policy = policy
        self.plan: Plan = make_plan(self.inventory, policy, self.units)
        if self.source_sizes is None:
            self.source_sizes = SourceSizes(self.plan)
        self.estimate: Estimate = estimate(self.plan, self.source_sizes)
        return self.estimate

    @property
    def num_layers(self) -> int:
        return self.plan.num_layers

    @property
    def warnings(self) -> list[str]:
        return [*self.inventory.warnings, *policy_warnings(self.plan)]

    def memory_fit(self, mac_gb: int = 256, context: int | None = None) -> MemoryFit:
        """The fit at `context` tokens; by default 32K or the model's own limit, whichever is less."""
        text_config = self.inventory.text_config
        context = default_context(text_config) if context is None else context
        return memory_fit(self.estimate.total_bytes, text_config, mac_gb, context)

    def roles_present(self) -> list[str]:
        return list(self.grid.roles)
