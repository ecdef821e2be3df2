"""Probes: VerbMem, KnowMem and Min-K% membership inference, with MUSE's exact definitions."""
