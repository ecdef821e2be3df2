"""unlearn-audit: has this language model really forgotten the data it claims to have unlearned?"""

__version__ = "0.1.0"
