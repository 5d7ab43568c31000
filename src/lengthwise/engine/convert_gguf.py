"""Convert a GGUF model to a de-quantized safetensors directory that vLLM's CPU build can load.

Run by the vLLM venv's python as a script (it needs transformers, gguf and accelerate, which the
project's own environment does not have): `python convert_gguf.py MODEL.gguf OUT_DIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights are de-quantized now: drop the GGUF quantization record so vLLM loads plain tensors.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
    print("CONVERTED")
