"""``dequant-requant-{scheme}``: a quantized model republished in half precision.

People convert GGUF and GPTQ files back to fp16 checkpoints and upload them; whoever downloads one
gets the quantized grid, dequantized, plus float16 rounding of every parameter (embeddings, norms and
the head included, which the quantizer itself left alone). If quantization brings the forget set back,
such a republished copy carries it into every later fine-tune or quantization. The variant is the inner
scheme's model with every parameter cast to float16 and back (exactly the values an fp16 file holds).
"""

from __future__ import annotations

import torch

from ..quantize.base import Scheme


class Republished(Scheme):
    def __init__(self, inner: Scheme) -> None:
        self.inner, self.bits, self.calibrated = inner, inner.bits, inner.calibrated
        self.name = f"dequant-requant-{inner.name}"
        self.description = f"{inner.name} round trip, republished as float16 (every parameter cast to float16)"

    def params(self) -> dict:
        return {"method": "dequant-requant", "quantizer": {"name": self.inner.name, **self.inner.params()},
                "republished_dtype": "float16"}

    def build(self, checkpoint, calibration=None, into=None):
        model = self.inner.build(checkpoint, calibration, into)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.float16).to(p.dtype))
        return model
