"""asr-adapt: adapt pretrained speech recognisers to tail languages and new locales.

The public Python API lives in :mod:`asr_adapt.api` (import lazily: it pulls in torch).
"""

__version__ = "0.1.0"
