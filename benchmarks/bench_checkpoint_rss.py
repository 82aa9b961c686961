"""Peak host memory of loading a Hugging Face Llama checkpoint, in bytes per parameter.

    python benchmarks/bench_checkpoint_rss.py [--dtype float32|bfloat16] [--model-dtype float32|stored]
                                              [--root DIR] [--keep DIR]

Writes a synthetic Llama checkpoint (random weights; hidden 1024, 8 layers, SwiGLU 2816, vocab 32000:
159 M parameters, 636 MB in fp32, two shards with ``model.safetensors.index.json`` and a ``config.json``)
into a temporary directory, then loads it in a fresh Python process with ``load_hf_llama`` (explicit
dims; an fp32 model, or with ``--model-dtype stored`` one in the stored dtype) and reads that process's peak resident set (``VmHWM`` in ``/proc/self/status``).
Reported: the peak minus the resident set after the imports (what the load adds), and the whole peak,
each divided by the parameter count. ``--root`` loads with the code of another checkout (e.g. an
unpacked ``git archive`` of an earlier commit) to compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DIMS = {"layers": 8, "hidden": 1024, "heads": 16, "kv_heads": 8, "mlp_hidden": 2816, "vocab": 32000}

MEASURE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024


import torch  # noqa: E402
from models.checkpoint import load_hf_llama  # noqa: E402
from models.dims import ModelDims  # noqa: E402

torch.set_num_threads(1)
dims = ModelDims(**json.loads(sys.argv[3]))
base = status("VmRSS")
kwargs = {"dtype": None} if sys.argv[4] == "stored" else {}
model = load_hf_llama(sys.argv[2], dims, num_classes=1, frames=1, tokens_per_frame=1, **kwargs)
params = sum(p.numel() for p in model.parameters())
print(json.dumps({"base": base, "peak": status("VmHWM"), "params": params}))
"""


def write_checkpoint(directory: Path, dtype: str) -> int:
    """A Llama checkpoint in Hugging Face layout: config.json, two shards and their index."""
    import torch
    from safetensors.torch import save_file

    d = DIMS
    hd = d["hidden"] // d["heads"]
    shapes = {"model.embed_tokens.weight": (d["vocab"], d["hidden"]), "model.norm.weight": (d["hidden"],)}
    for i in range(d["layers"]):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (d["hidden"],),
                p + "post_attention_layernorm.weight": (d["hidden"],),
                p + "self_attn.q_proj.weight": (d["heads"] * hd, d["hidden"]),
                p + "self_attn.k_proj.weight": (d["kv_heads"] * hd, d["hidden"]),
                p + "self_attn.v_proj.weight": (d["kv_heads"] * hd, d["hidden"]),
                p + "self_attn.o_proj.weight": (d["hidden"], d["heads"] * hd),
                p + "mlp.gate_proj.weight": (d["mlp_hidden"], d["hidden"]),
                p + "mlp.up_proj.weight": (d["mlp_hidden"], d["hidden"]),
                p + "mlp.down_proj.weight": (d["hidden"], d["mlp_hidden"]),
            }
        )
    shapes["lm_head.weight"] = (d["vocab"], d["hidden"])
    g = torch.Generator().manual_seed(0)
    keys = list(shapes)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2]}
    halves["model-00002-of-00002.safetensors"] = keys[len(keys) // 2 :]
    weight_map = {}
    for name, part in halves.items():
        tensors = {k: (torch.randn(shapes[k], generator=g) * 0.02).to(getattr(torch, dtype)) for k in part}
        save_file(tensors, str(directory / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": d["hidden"],
        "num_hidden_layers": d["layers"],
        "num_attention_heads": d["heads"],
        "num_key_value_heads": d["kv_heads"],
        "intermediate_size": d["mlp_hidden"],
        "vocab_size": d["vocab"],
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "torch_dtype": dtype,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return sum(int(torch.Size(s).numel()) for s in shapes.values())


def measure(directory: Path, root: Path, model_dtype: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", MEASURE, str(root), str(directory), json.dumps(DIMS), model_dtype],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument(
        "--model-dtype",
        default="float32",
        choices=["float32", "stored"],
        help="the model's dtype: float32 (what a capture uses) or the stored one (load_hf_llama(dtype=None))",
    )
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose models/ is measured")
    ap.add_argument("--keep", type=Path, help="write the checkpoint here (and keep it) instead of a temp dir")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "config.json").is_file():
            write_checkpoint(directory, args.dtype)
        size = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
        m = measure(directory, args.root.resolve(), args.model_dtype)
    n = m["params"]
    print(
        f"{n / 1e6:.1f} M parameters, {size / 1e6:.0f} MB of {args.dtype} shards, {args.model_dtype} model, "
        f"code from {args.root}: "
        f"peak RSS {m['peak'] / 1e6:.0f} MB ({m['peak'] / n:.2f} B/param), "
        f"{(m['peak'] - m['base']) / 1e6:.0f} MB above the {m['base'] / 1e6:.0f} MB after imports "
        f"({(m['peak'] - m['base']) / n:.2f} B/param)"
    )


if __name__ == "__main__":
    main()
