"""The PyTorch side: AR video transformer, FastCar replay, tokenizer, data, training, capture.

Modules (import them directly; this package imports nothing so ``models.dims`` stays torch-free):
``transformer`` (Llama-style decoder), ``fastcar`` (KV-cache decode with TAS-gated MLP replay),
``policies`` (dense, tas and the baselines), ``data`` (procedural videos), ``tokenizer`` (patch VQ),
``train`` (the reproducible training script), ``checkpoint`` (shipped model, HF Llama safetensors),
``capture`` (trace capture and quality), ``export`` (traces from other implementations' logs),
``figures`` (docs figures).
"""
