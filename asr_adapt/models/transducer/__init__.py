"""Streaming cascaded Conformer-transducer backbone (registered as ``"transducer"``).

Modules: ``config`` (presets), ``frontend`` (log-mel, CMVN, 4x subsampling), ``encoder``
(chunk-masked Conformer blocks with streaming caches), ``cascade`` (first + second pass),
``predictor``, ``joiner``, ``tokenizer``, ``model`` (the :class:`TransducerBackbone`).
"""

from asr_adapt.models.transducer.config import PRESETS, TransducerConfig
from asr_adapt.models.transducer.model import TransducerBackbone
from asr_adapt.models.transducer.tokenizer import TOKENIZERS, load_tokenizer, train_tokenizer

__all__ = ["PRESETS", "TOKENIZERS", "TransducerBackbone", "TransducerConfig", "load_tokenizer", "train_tokenizer"]
