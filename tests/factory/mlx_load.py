"""Load a tiny HF-layout checkpoint with mlx-lm, filling the two gaps mlx-lm 0.32.2
has with official layouts, so tests can run any source model as a reference.

- deepseek_v3: sanitize drops only `model.layers.61` (V3's MTP index), so an
  MTP layer at any other index (ours sits at num_hidden_layers) fails the
  strict load. We drop `model.layers.{num_hidden_layers}.*`, as sanitize means to.
- gpt_oss: sanitize reads the MXFP4 layout only; unquantized experts
  (`experts.gate_up_proj`, `experts.down_proj`: [E, in, out], no `.weight`)
  are rejected (ml-explore/mlx-lm#1079). We transpose them and add `.weight`,
  after which mlx-lm's own split of the interleaved gate/up applies.

Every other architecture goes through mlx-lm unchanged.
"""

from __future__ import annotations

from pathlib import Path

NEEDS_FILL = ("deepseek_v3", "gpt_oss")


def fill_known_gaps(weights: dict, config: dict) -> dict:
    model_type = config["model_type"]
    if model_type == "deepseek_v3":
        mtp = f"model.layers.{config['num_hidden_layers']}."
        weights = {k: v for k, v in weights.items() if not k.startswith(mtp)}
    elif model_type == "gpt_oss":
        fixed = {}
        for k, v in weights.items():
            if k.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
                k, v = k + ".weight", v.swapaxes(-1, -2)
            fixed[k] = v
        weights = fixed
    return weights


def load_with_mlx_lm(path: Path):
    """(model, tokenizer) like mlx_lm.load, strict, with the gaps above filled."""
    from mlx_lm.utils import _get_classes, load_model, load_tokenizer

    def classes(config):
        model_cls, args_cls = _get_classes(config)

        class Filled(model_cls):
            def sanitize(self, weights):
                weights = fill_known_gaps(weights, config)
                return super().sanitize(weights) if hasattr(model_cls, "sanitize") else weights

        return Filled, args_cls

    model, config = load_model(Path(path), get_model_classes=classes)
    return model, load_tokenizer(Path(path), eos_token_ids=config.get("eos_token_id"))
