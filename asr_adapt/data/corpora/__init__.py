"""Preparers that turn downloaded speech corpora into Kaldi data dirs.

Each corpus module registers a :class:`Corpus` in :data:`CORPORA` (name, frozen config
class, ``prepare(src, out, config)``); the CLI and recipes look corpora up by name::

    from asr_adapt.data.corpora import CORPORA
    corpus = CORPORA.get("fleurs")
    report = corpus.prepare("fleurs/data", "data", corpus.config_cls(locales=("el_gr",)))

Adding a corpus means adding a module that registers itself and importing it below.
"""

from asr_adapt.data.corpora.common import (  # noqa: F401  (public API)
    CORPORA,
    REASONS,
    SKIPPED_FILE,
    Corpus,
    PrepareConfig,
    PrepareReport,
    SplitReport,
    bcp47,
)
from asr_adapt.data.corpora.commonvoice import CommonVoiceConfig, prepare_commonvoice  # noqa: F401
from asr_adapt.data.corpora.fleurs import FleursConfig, prepare_fleurs  # noqa: F401
