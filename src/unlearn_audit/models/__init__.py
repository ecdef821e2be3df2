"""The one way probes touch a model: batched token scores and batched greedy generation."""
