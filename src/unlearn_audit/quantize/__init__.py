"""Quantization schemes: each turns a checkpoint into a model variant behind the narrow interface."""
