"""A corpus of malformed model folders and policy files, generated from tiny real models.

Each `Case` copies one base model (or uses it as is, with a hostile policy) and
breaks it one way. `build(case, bases, work)` returns the folder to open and the
policy file to pass, if any. Categories follow issue 13: types, hostile JSON,
non-regular files, absurd numbers, inconsistent models, paths, policies, and
outputs (a tokenizer that cannot be loaded: only commands that produce or load
a model refuse those).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

ALL_COMMANDS = ("inspect", "estimate", "convert", "fit", "chat", "eval", "window")
LOADING_COMMANDS = ("convert", "chat", "eval")


@dataclass
class Case:
    category: str
    name: str
    base: str  # key into the base models: llama1, llama2, moe, fp8, mlx
    mutate: Callable[[Path], None] | None = None  # breaks the copied folder
    policy: bytes | Callable[[Path], None] | None = None  # a hostile policy (file content, or a maker)
    refused_by: tuple[str, ...] = ALL_COMMANDS

    @property
    def id(self) -> str:
        return f"{self.category}-{self.name}"


# --------------------------------------------------------------------------- file surgery


def shard(folder: Path, index: int = 0) -> Path:
    return sorted(folder.glob("*.safetensors"))[index]


def read_st(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_st(path: Path, header: dict | bytes, data: bytes) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def header_edit(fn, index: int = 0):
    def mutate(folder: Path) -> None:
        path = shard(folder, index)
        header, data = read_st(path)
        result = fn(header)
        write_st(path, header if result is None else result, data)
    return mutate


def entry_edit(name: str, **changes):
    def fn(header):
        header[name].update(changes)
    return header_edit(fn)


def raw_header(raw: bytes):
    def mutate(folder: Path) -> None:
        path = shard(folder)
        _, data = read_st(path)
        write_st(path, raw, data)
    return mutate


def rename_tensor(old: str, new: str):
    def fn(header):
        header[new] = header.pop(old)
    return header_edit(fn)


def drop_tensors(*names_or_prefixes: str):
    def mutate(folder: Path) -> None:
        for path in sorted(folder.glob("*.safetensors")):
            header, data = read_st(path)
            for name in [n for n in header if n.startswith(names_or_prefixes)]:
                del header[name]
            write_st(path, header, data)
        index = folder / "model.safetensors.index.json"
        if index.exists():
            doc = json.loads(index.read_text())
            doc["weight_map"] = {k: v for k, v in doc["weight_map"].items() if not k.startswith(names_or_prefixes)}
            index.write_text(json.dumps(doc))
    return mutate


def config_edit(fn):
    def mutate(folder: Path) -> None:
        path = folder / "config.json"
        config = json.loads(path.read_text())
        result = fn(config)
        path.write_text(json.dumps(config if result is None else result))
    return mutate


def config_set(**values):
    def fn(config):
        config.update(values)
    return config_edit(fn)


def config_del(*keys):
    def fn(config):
        for k in keys:
            config.pop(k, None)
    return config_edit(fn)


def config_raw(raw: bytes):
    def mutate(folder: Path) -> None:
        (folder / "config.json").write_bytes(raw)
    return mutate


def index_edit(fn):
    def mutate(folder: Path) -> None:
        path = folder / "model.safetensors.index.json"
        doc = json.loads(path.read_text())
        result = fn(doc)
        path.write_text(json.dumps(doc if result is None else result))
    return mutate


def index_raw(raw: bytes):
    def mutate(folder: Path) -> None:
        (folder / "model.safetensors.index.json").write_bytes(raw)
    return mutate


def remap_shard(new_name: str):
    def fn(doc):
        first = next(iter(doc["weight_map"]))
        doc["weight_map"][first] = new_name
    return index_edit(fn)


def replace_with(kind: str, name_of: Callable[[Path], Path]):
    """Replace a file by a folder, a named pipe, a symlink loop or a dangling symlink."""
    def mutate(folder: Path) -> None:
        path = name_of(folder)
        path.unlink()
        if kind == "dir":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "loop":
            os.symlink(path.name, path)
        elif kind == "dangling":
            os.symlink("nowhere-at-all.bin", path)
    return mutate


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_json_in_field(depth: int = 100_000) -> bytes:
    return b'{"model_type": "llama", "num_hidden_layers": 2, "x": ' + nested(depth) + b"}"


def truncate_data(folder: Path) -> None:
    path = shard(folder)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 64)


def _add_extra_shard(folder: Path) -> None:
    shutil.copyfile(shard(folder), folder / "model-extra.safetensors")


def _drop_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink(missing_ok=True)


def _tokenizer_remote(folder: Path) -> None:
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    path.write_text(json.dumps(config))
    (folder / "tokenization_evil.py").write_text("raise SystemExit('remote code ran')\n")


def _tokenizer_corrupt(folder: Path) -> None:
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')


def _tokenizer_fifo(folder: Path) -> None:
    path = folder / "tokenizer.json"
    path.unlink()
    os.mkfifo(path)


def _not_a_folder(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.write_text("not a model")


def _mlx_scales_zero_width(folder: Path) -> None:
    path = shard(folder)
    header, data = read_st(path)
    name = next(n for n in header if n.endswith("q_proj.scales"))
    begin = header[name]["data_offsets"][0]
    header[name].update(shape=[header[name]["shape"][0], 0], data_offsets=[begin, begin])
    write_st(path, header, data)


def _transpose_fp8_scale(folder: Path) -> None:
    path = shard(folder)
    header, data = read_st(path)
    name = next(n for n, e in header.items() if n.endswith("weight_scale_inv") and isinstance(e, dict)
                and len(e["shape"]) == 2 and e["shape"][0] != e["shape"][1])
    header[name]["shape"] = header[name]["shape"][::-1]
    write_st(path, header, data)


def _expert_shape(folder: Path) -> None:
    path = shard(folder)
    header, data = read_st(path)
    name = "model.layers.0.mlp.experts.2.down_proj.weight"
    rows, cols = header[name]["shape"]
    header[name]["shape"] = [rows // 2, cols * 2]
    write_st(path, header, data)


def _e5m2(folder: Path) -> None:
    path = shard(folder)
    header, data = read_st(path)
    name = next(n for n, e in header.items() if isinstance(e, dict) and e.get("dtype") == "F8_E4M3")
    header[name]["dtype"] = "F8_E5M2"
    write_st(path, header, data)


def _scale_without_weight(folder: Path) -> None:
    path = shard(folder)
    header, data = read_st(path)
    name = next(n for n in header if n.endswith(".weight_scale_inv"))
    header[name.replace(".weight_scale_inv", ".weight")[:-7] + ".kernel"] = header.pop(name.replace("_scale_inv", ""))
    write_st(path, header, data)


def _overlap(header):
    a, b = [n for n in header if n != "__metadata__"][:2]
    header[b]["data_offsets"] = list(header[a]["data_offsets"])
    header[b]["shape"], header[b]["dtype"] = header[a]["shape"], header[a]["dtype"]


def _offsets(value):
    def fn(header):
        name = next(n for n in header if n != "__metadata__")
        header[name]["data_offsets"] = value
    return header_edit(fn)


def _first_entry(**changes):
    def fn(header):
        name = next(n for n in header if n != "__metadata__")
        if "__entry__" in changes:
            header[name] = changes["__entry__"]
        else:
            header[name].update(changes)
    return header_edit(fn)


def _first_name(new: str):
    def fn(header):
        name = next(n for n in header if n != "__metadata__")
        header[new] = header.pop(name)
    return header_edit(fn)


# --------------------------------------------------------------------------- policies


def policy_json(rules=None, **top) -> bytes:
    doc = {"format": "configi-studio.policy", "version": 1, "name": "hostile",
           "rules": rules if rules is not None else [{"roles": ["*"], "layers": "all",
                                                      "action": {"quantize": {"bits": 4, "group_size": 64}}}]}
    doc.update(top)
    return json.dumps(doc).encode()


def quant_rule(**quantize) -> bytes:
    return policy_json([{"roles": ["attention"], "layers": "all", "action": {"quantize": quantize}}])


def layers_rule(layers) -> bytes:
    return policy_json([{"roles": ["attention"], "layers": layers, "action": {"keep": "source"}}])


def policy_path_kind(kind: str):
    """A policy "file" that is a folder, a pipe or a dangling link (made at `path`)."""
    def make(path: Path) -> None:
        if kind == "dir":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "dangling":
            os.symlink("missing-policy.json", path)
        elif kind == "loop":
            os.symlink(path.name, path)
    return make


# --------------------------------------------------------------------------- the cases

L0 = "model.layers.0"
SHARD1 = lambda f: f / "model.safetensors"  # noqa: E731
CONFIG = lambda f: f / "config.json"  # noqa: E731
INDEX = lambda f: f / "model.safetensors.index.json"  # noqa: E731


def cases() -> list[Case]:
    c: list[Case] = []

    def add(category, name, base, mutate=None, policy=None, refused_by=ALL_COMMANDS):
        c.append(Case(category, name, base, mutate, policy, refused_by))

    # --- types the code did not expect: config.json
    for name, values in {
        "layers-str": {"num_hidden_layers": "4"}, "layers-word": {"num_hidden_layers": "four"},
        "layers-float": {"num_hidden_layers": 2.0}, "layers-bool": {"num_hidden_layers": True},
        "layers-null": {"num_hidden_layers": None}, "layers-list": {"num_hidden_layers": [2]},
        "hidden-str": {"hidden_size": "128"}, "model-type-list": {"model_type": ["llama"]},
        "model-type-int": {"model_type": 5}, "text-config-list": {"text_config": [1, 2]},
        "text-config-str": {"text_config": "llama"}, "quantization-number": {"quantization": 4},
        "quantization-bits-str": {"quantization": {"bits": "4", "group_size": 64}},
        "quantization-group-float": {"quantization": {"bits": 4, "group_size": 64.0}},
        "quantization-mode-int": {"quantization": {"bits": 4, "group_size": 64, "mode": 3}},
        "quantization-entry-int": {"quantization": {"bits": 4, "group_size": 64, "model.embed_tokens": 5}},
        "quant-config-list": {"quantization_config": []},
        "block-size-str": {"quantization_config": {"quant_method": "fp8", "weight_block_size": "128"}},
        "vocab-str": {"vocab_size": "big"}, "heads-negative": {"num_attention_heads": -1},
        "dtype-int": {"torch_dtype": 5}, "tie-str": {"tie_word_embeddings": "yes"},
        "architectures-int": {"architectures": 5}, "model-file": {"model_file": "modeling_evil.py"},
        "experts-str": {"num_experts": "8"},
    }.items():
        add("types", name, "moe" if name == "experts-str" else "llama1", config_set(**values))
    add("types", "config-top-list", "llama1", config_raw(b"[1, 2, 3]"))
    add("types", "config-top-str", "llama1", config_raw(b'"llama"'))
    add("types", "layers-missing", "llama1", config_del("num_hidden_layers"))
    # ... and in safetensors headers
    add("types", "offsets-strings", "llama1", _offsets(["0", "64"]))
    add("types", "offsets-one", "llama1", _offsets([0]))
    add("types", "offsets-negative", "llama1", _offsets([-64, 0]))
    add("types", "offsets-reversed", "llama1", _offsets([64, 0]))
    add("types", "offsets-float", "llama1", _offsets([0.0, 64.0]))
    add("types", "dtype-list", "llama1", _first_entry(dtype=["BF16"]))
    add("types", "dtype-unknown", "llama1", _first_entry(dtype="Q4_K"))
    add("types", "dtype-null", "llama1", _first_entry(dtype=None))
    add("types", "shape-str", "llama1", _first_entry(shape="abc"))
    add("types", "shape-negative", "llama1", _first_entry(shape=[-1, 2]))
    add("types", "shape-float", "llama1", _first_entry(shape=[2.0, 64]))
    add("types", "shape-dict", "llama1", _first_entry(shape={"rows": 2}))
    add("types", "shape-nine-dims", "llama1", _first_entry(shape=[1] * 9))
    add("types", "entry-list", "llama1", _first_entry(__entry__=[1, 2]))
    add("types", "entry-str", "llama1", _first_entry(__entry__="BF16"))
    add("types", "header-list", "llama1", raw_header(b"[1, 2]"))
    add("types", "name-nul", "llama1", _first_name("model.embed\u0000tokens.weight"))
    add("types", "name-slash", "llama1", _first_name("model/../../etc/passwd"))
    add("types", "name-dotdot", "llama1", _first_name("model..embed_tokens.weight"))
    add("types", "name-empty", "llama1", _first_name(""))
    add("types", "name-long", "llama1", _first_name("m" * 5000))
    # ... and in the index
    add("types", "weight-map-list", "llama2", index_edit(lambda d: d.update(weight_map=[1, 2])))
    add("types", "weight-map-numbers", "llama2",
        index_edit(lambda d: d.update(weight_map={k: 1 for k in d["weight_map"]})))
    add("types", "weight-map-missing", "llama2", index_edit(lambda d: {"metadata": {}}))
    add("types", "index-top-list", "llama2", index_raw(b"[]"))

    # --- hostile JSON
    add("json", "config-deep", "llama1", config_raw(deep_json_in_field()))
    add("json", "config-deep-200", "llama1", config_raw(deep_json_in_field(200)))
    add("json", "config-not-utf8", "llama1", config_raw(b'{"model_type": "ll\xff\xfeama"}'))
    add("json", "config-not-json", "llama1", config_raw(b"{model_type: llama"))
    add("json", "config-nan", "llama1", config_raw(b'{"model_type": "llama", "num_hidden_layers": NaN}'))
    add("json", "config-inf", "llama1", config_raw(b'{"model_type": "llama", "num_hidden_layers": 1e999}'))
    add("json", "config-huge-int", "llama1",
        config_raw(b'{"model_type": "llama", "num_hidden_layers": ' + b"9" * 5000 + b"}"))
    add("json", "config-5mb", "llama1", config_raw(b'{"model_type": "llama", "pad": "' + b"x" * 5_000_000 + b'"}'))
    add("json", "header-deep", "llama1", raw_header(nested(100_000)))
    add("json", "header-not-utf8", "llama1", raw_header(b'{"a\xff": 1}'))
    add("json", "header-not-json", "llama1", raw_header(b"{not json at all"))
    add("json", "header-nan", "llama1", raw_header(b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, NaN]}}'))
    add("json", "index-deep", "llama2", index_raw(b'{"weight_map": ' + nested(100_000) + b"}"))
    add("json", "index-not-utf8", "llama2", index_raw(b'{"weight_map": {"\xff": 1}}'))
    add("json", "index-not-json", "llama2", index_raw(b"{"))

    # --- files that are not regular files
    for kind in ("dir", "fifo", "loop", "dangling"):
        add("files", f"shard-{kind}", "llama1", replace_with(kind, SHARD1))
        add("files", f"config-{kind}", "llama1", replace_with(kind, CONFIG))
        add("files", f"index-{kind}", "llama2", replace_with(kind, INDEX))
    add("files", "model-is-a-file", "llama1", _not_a_folder)
    add("files", "shard-too-short", "llama1", lambda f: SHARD1(f).write_bytes(b"abc"))
    add("files", "header-longer-than-file", "llama1",
        lambda f: SHARD1(f).write_bytes(struct.pack("<Q", 10**12) + b"{}"))
    add("files", "shard-truncated", "llama1", truncate_data)
    add("files", "shard-empty-header", "llama1", lambda f: SHARD1(f).write_bytes(struct.pack("<Q", 0)))
    add("files", "no-shards", "llama1", lambda f: SHARD1(f).unlink())

    # --- numbers that are absurd
    for name, values in {
        "layers-zero": {"num_hidden_layers": 0}, "layers-negative": {"num_hidden_layers": -1},
        "layers-billion": {"num_hidden_layers": 10**9}, "layers-huge": {"num_hidden_layers": 10**18},
        "layers-one-more": {"num_hidden_layers": 3}, "layers-one-less": {"num_hidden_layers": 1},
        "vocab-2-40": {"vocab_size": 2**40}, "vocab-zero": {"vocab_size": 0},
        "vocab-mismatch": {"vocab_size": 1000}, "hidden-2-40": {"hidden_size": 2**40},
        "hidden-mismatch": {"hidden_size": 256}, "kv-heads-over-heads": {"num_key_value_heads": 64},
        "head-dim-zero": {"head_dim": 0}, "experts-billion": {"num_experts": 10**9},
        "experts-mismatch": {"num_experts": 16},
    }.items():
        add("numbers", name, "moe" if name.startswith("experts") else "llama1", config_set(**values))
    add("numbers", "mlx-group-mismatch", "mlx",
        config_edit(lambda c: c["quantization"].update(group_size=128)))
    add("numbers", "mlx-bits-mismatch", "mlx",
        config_edit(lambda c: c["quantization"].update(bits=3, group_size=32)))
    add("numbers", "mlx-scales-zero-width", "mlx", _mlx_scales_zero_width)

    # --- models that are inconsistent
    add("inconsistent", "missing-tensor", "llama1", drop_tensors("model.layers.1.self_attn.k_proj.weight"))
    add("inconsistent", "missing-layer", "llama1", drop_tensors("model.layers.1."))
    add("inconsistent", "missing-expert", "moe", drop_tensors(f"{L0}.mlp.experts.3."))
    add("inconsistent", "missing-expert-zero", "moe", drop_tensors(f"{L0}.mlp.experts.0."))
    add("inconsistent", "missing-all-experts-down", "moe",
        drop_tensors(*[f"{L0}.mlp.experts.{e}.down_proj" for e in range(8)]))
    add("inconsistent", "expert-shape", "moe", _expert_shape)
    add("inconsistent", "fp8-scales-transposed", "fp8", _transpose_fp8_scale)
    add("inconsistent", "fp8-e5m2", "fp8", _e5m2)
    add("inconsistent", "fp8-scale-without-weight", "fp8", _scale_without_weight)
    add("inconsistent", "deepseek-no-v-head-dim", "fp8", config_del("v_head_dim"))
    add("inconsistent", "deepseek-no-nope-dim", "fp8", config_del("qk_nope_head_dim"))
    add("inconsistent", "mlx-no-biases", "mlx", drop_tensors(f"{L0}.self_attn.q_proj.biases"))
    add("inconsistent", "overlapping-tensors", "llama1", header_edit(_overlap))
    add("inconsistent", "span-mismatch", "llama1", _first_entry(shape=[1, 1]))
    add("inconsistent", "index-wrong-shard", "llama2", index_edit(
        lambda d: d["weight_map"].update({k: ("model-00002-of-00002.safetensors" if v.endswith("1-of-00002.safetensors")
                                              else "model-00001-of-00002.safetensors")
                                          for k, v in list(d["weight_map"].items())[:1]})))
    add("inconsistent", "index-missing-tensor", "llama2",
        index_edit(lambda d: d["weight_map"].pop(next(iter(d["weight_map"]))) and None))
    add("inconsistent", "index-extra-tensor", "llama2",
        index_edit(lambda d: d["weight_map"].update({"model.ghost.weight": next(iter(d["weight_map"].values()))})))
    add("inconsistent", "index-missing-shard-file", "llama2",
        lambda f: (f / "model-00002-of-00002.safetensors").unlink())
    add("inconsistent", "shard-not-in-index", "llama2", _add_extra_shard)

    # --- paths that leave the folder
    for name, target in {"dotdot": "../other/model.safetensors", "absolute": "/etc/passwd",
                         "nested-dotdot": "sub/../../x.safetensors", "windows-drive": "C:\\x.safetensors",
                         "nul": "model\u0000.safetensors", "empty": ""}.items():
        add("paths", name, "llama2", remap_shard(target))

    # --- policies (passed with --policy, and as the folder's own configi_policy.json)
    for name, policy in {
        "bits-float": quant_rule(bits=4.0, group_size=64), "group-float": quant_rule(bits=4, group_size=64.0),
        "bits-str": quant_rule(bits="4", group_size=64), "bits-bool": quant_rule(bits=True, group_size=64),
        "bits-seven": quant_rule(bits=7, group_size=64), "group-100": quant_rule(bits=4, group_size=100),
        "mode-int": quant_rule(bits=4, mode=5), "mode-unknown": quant_rule(bits=4, mode="int4"),
        "quantize-list": policy_json([{"roles": ["*"], "layers": "all", "action": {"quantize": []}}]),
        "keep-int8": policy_json([{"roles": ["*"], "layers": "all", "action": {"keep": "int8"}}]),
        "action-keep-bare": policy_json([{"roles": ["*"], "layers": "all", "action": "keep"}]),
        "action-missing": policy_json([{"roles": ["*"], "layers": "all"}]),
        "first-bool": layers_rule({"first": True}), "first-negative": layers_rule({"first": -1}),
        "range-reversed": layers_rule({"range": [3, 1]}), "list-float": layers_rule({"list": [1.5]}),
        "list-200k": layers_rule({"list": list(range(200_000))}), "first-huge": layers_rule({"first": 10**30}),
        "rules-object": policy_json({}), "rules-empty": policy_json([]),
        "rules-20k": policy_json([{"roles": ["attention"], "layers": "all", "action": "drop"}] * 20_000),
        "rule-int": policy_json([5]), "roles-int": policy_json([{"roles": 5, "action": "drop"}]),
        "roles-unknown": policy_json([{"roles": ["nope"], "action": "drop"}]),
        "unknown-key": policy_json([{"roles": ["*"], "action": "drop", "colour": "red"}]),
        "note-50mb": policy_json([{"roles": ["*"], "action": "drop", "note": "x" * 50_000_000}]),
        "note-int": policy_json([{"roles": ["*"], "action": "drop", "note": 5}]),
        "format-other": policy_json(format="something.else"), "version-str": policy_json(version="1"),
        "version-2": policy_json(version=2), "name-list": policy_json(name=["a"]),
        "top-list": b"[]", "deep": nested(100_000), "not-utf8": b'{"name": "\xff"}', "not-json": b"{",
        "nan": b'{"rules": NaN}',
    }.items():
        add("policy", name, "llama1", policy=policy)
    for kind in ("dir", "fifo", "dangling", "loop"):
        add("policy", f"file-{kind}", "llama1", policy=policy_path_kind(kind))

    # --- outputs: a tokenizer that cannot be loaded (only commands that produce or load a model need one)
    add("output", "no-tokenizer", "llama1", _drop_tokenizer, refused_by=LOADING_COMMANDS)
    add("output", "tokenizer-remote-code", "llama1", _tokenizer_remote, refused_by=LOADING_COMMANDS)
    add("output", "tokenizer-corrupt", "llama1", _tokenizer_corrupt, refused_by=LOADING_COMMANDS)
    add("output", "tokenizer-fifo", "llama1", _tokenizer_fifo, refused_by=LOADING_COMMANDS)
    return c


def build(case: Case, bases: dict[str, Path], work: Path) -> tuple[Path, Path | None]:
    """The case's model folder (a broken copy of its base) and its policy file, under `work`."""
    folder = work / case.id / "model"
    folder.parent.mkdir(parents=True)
    shutil.copytree(bases[case.base], folder, symlinks=True)
    policy = None
    if case.policy is not None:
        policy = work / case.id / "policy.json"
        own = folder / "configi_policy.json"
        for path in (policy, own):
            if callable(case.policy):
                case.policy(path)
            else:
                path.write_bytes(case.policy)
    if case.mutate is not None:
        case.mutate(folder)
    return folder, policy


def snapshot(*roots: Path) -> dict:
    """Every entry under `roots` (links not followed, pipes never opened): kind, size, mtime, content."""
    import hashlib
    import stat

    seen = {}
    for root in roots:
        if root is None:
            continue
        stack = [root]
        while stack:
            path = stack.pop()
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                seen[str(path)] = None
                continue
            digest = None
            if stat.S_ISREG(st.st_mode) and st.st_size < 64 * 2**20:
                digest = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
            elif stat.S_ISDIR(st.st_mode):
                stack.extend(path.iterdir())
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(path)
            seen[str(path)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, digest)
    return seen


# --------------------------------------------------------------------------- base models (a fixture)


@pytest.fixture(scope="session")
def bases(tiny_model, tmp_path_factory):
    """name -> read-only folder: llama (1 and 2 shards), an MoE, a DeepSeek-V3 FP8, an MLX 4-bit."""
    from studio.core.convert import convert
    from studio.core.project import Project

    mlx = tmp_path_factory.mktemp("hostile-base") / "mlx"
    convert(Project.open(tiny_model("llama", shards=1), "uniform-4bit"), mlx, measure_errors=False)
    return {
        "llama1": tiny_model("llama", shards=1),
        "llama2": tiny_model("llama", shards=2),
        "moe": tiny_model("qwen3_moe", shards=1),
        "fp8": tiny_model("deepseek_v3", "fp8", shards=1),
        "mlx": mlx,
    }
