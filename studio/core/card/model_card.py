"""The output's README.md: where it came from, the policy, the size, and what is not known."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from studio import __version__
from studio.core.policy.estimate import Estimate
from studio.core.formatting import human_bytes, shareable_name
from studio.core.policy.plan import Plan
from studio.core.policy.bit_policy import OWN_POLICY_FILE
from studio.core.model.roles import ROLE_BY_KEY, ROLES


def _layer_ranges(layers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    parts, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            parts.append(str(start) if start == layer else f"{start}-{layer}")
            start = None
    return ", ".join(parts)


def policy_table(plan: Plan) -> str:
    """One row per role: which layers got which treatment."""
    by_role: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for unit, decision in plan.rows():
        by_role[unit.role][decision.label()].add(unit.layer)
    rows = []
    for role in ROLES:
        if role.key not in by_role:
            continue
        cells = []
        for label, layers in sorted(by_role[role.key].items(), key=lambda kv: min((x for x in kv[1] if x is not None),
                                                                                  default=-1)):
            numbered = sorted(x for x in layers if x is not None)
            where = []
            if None in layers:
                where.append("outside layers")
            if numbered:
                where.append(f"layers {_layer_ranges(numbered)}")
            cells.append(f"{label} ({'; '.join(where)})")
        rows.append([ROLE_BY_KEY[role.key].label, ", ".join(cells)])
    lines = ["| Role | Treatment |", "| --- | --- |"]
    lines += [f"| {name} | {cells} |" for name, cells in rows]
    return "\n".join(lines)


def model_card(plan: Plan, estimate: Estimate, source: str) -> str:
    """The card of a conversion of `source` (a repo id, or a local folder: named by its last part only,
    since publishing uploads the card and the machine's paths are nobody's business)."""
    source = shareable_name(source)
    inventory = plan.inventory
    policy = plan.policy
    base_model = inventory.source.base_model
    front = ["---", f"base_model: {base_model}", "library_name: mlx", "tags: [mlx, config-i]", "---", ""] \
        if base_model else []
    lines = front + [
        f"# {inventory.name}, MLX, {policy.name}",
        "",
        f"Converted to MLX by Config-I Studio {__version__} from `{source}` "
        f"({inventory.model_type or 'unknown architecture'}, source format {inventory.source_format}).",
        "",
        "## Policy",
        "",
        f"{policy.name}: {policy.description}".rstrip(": "),
        "",
        policy_table(plan),
        "",
        "The policy file is `configi_policy.json` beside this card; to reproduce:",
        "",
        "```",
        f"configi-studio convert {source} OUT --policy configi_policy.json",
        "```",
        "",
        "## Size",
        "",
        "| Figure | Value |",
        "| --- | --- |",
        f"| tensor data | {human_bytes(estimate.total_bytes)} ({estimate.total_bytes:,} bytes) |",
        f"| source tensor data | {human_bytes(estimate.source_bytes)} |",
        f"| bits per weight, quantized weights | {estimate.bpw_quantized:.3f} |",
        f"| bits per weight, whole output (all bytes / all parameters) | {estimate.bpw_output:.3f} |",
        "",
        "## Quality",
        "",
        "Not evaluated.",
        "",
    ]
    return "\n".join(lines)


QUALITY_HEADING = "## Quality"


def quality_section(result) -> str:
    """The card's quality section from an evaluation: the figures, the verdict, and its limits."""
    from studio.core.evaluate.report import figure_rows

    verdict = result.verdict()
    lines = [
        QUALITY_HEADING,
        "",
        f"Evaluated by Config-I Studio {__version__} against `{shareable_name(result.reference)}` on "
        f"{result.tokens:,} tokens of `{shareable_name(result.text)}` ({result.windows} windows of {result.context}; "
        f"{result.compute_sentence()}). "
        "The statistics are those of llama.cpp's `llama-perplexity --kl-divergence`; ± is one standard error.",
        "",
        "| Figure | Value |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {value} |" for _, name, value in figure_rows(result)]
    lines += ["", f"Verdict: **{verdict.label}**. {verdict.summary}", ""]
    lines += [f"- {caveat}" for caveat in verdict.caveats]
    lines.append("")
    return "\n".join(lines)


def record_evaluation(folder, result) -> bool:
    """Write `evaluation.json` and the card's quality section into a folder this studio converted.

    Folders the studio did not make (no `configi_policy.json`) are left untouched.
    """
    folder = Path(folder)
    if not (folder / OWN_POLICY_FILE).exists():
        return False
    record = result.to_dict()
    for key in ("output", "reference", "text"):  # published with the folder: no path of this machine
        record[key] = shareable_name(record[key])
    (folder / "evaluation.json").write_text(json.dumps(record, indent=1) + "\n")
    card = folder / "README.md"
    text = card.read_text() if card.exists() else ""
    head, found, rest = text.partition(QUALITY_HEADING)
    tail = ""
    if found:
        after = rest.split("\n## ", 1)
        tail = "\n## " + after[1] if len(after) == 2 else ""
    card.write_text(head.rstrip() + "\n\n" + quality_section(result) + tail)
    return True
