"""Recovery attacks beyond quantization: other ways a released model gets changed that can bring an
unlearned forget set back.

Zhang et al. (ICLR 2025, "Catastrophic failure of LLM unlearning via quantization") showed that
quantizing an unlearned model can restore what it forgot; ``quantize/`` holds that attack. The attacks
here are of the same shape, a map from the audited weights to nearby weights, but are not quantizers:

- ``perturb``: magnitude pruning and Gaussian weight noise;
- ``relearn``: a few fine-tuning steps on public, related text, never the forget set (after Hu et al.,
  ICLR 2025, "Jogging the memory of unlearned LLMs through targeted relearning");
- ``republish``: a quantized model converted back to float16 and shared as such.

Each implements the ``Scheme`` contract of ``quantize/base.py`` and is registered in
``quantize/registry.py`` beside the quantizers, so the audit runs, probes and judges them alike.
"""
