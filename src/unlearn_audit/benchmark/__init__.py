"""The built-in benchmark: fictitious biographies, and the demo scenario built on them."""
