"""Unlearning methods (GA, NPO with GDR/KLR regularizers) and SURE, the paper's remedy."""
