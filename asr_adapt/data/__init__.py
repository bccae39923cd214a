"""Data layer: Kaldi data dirs, JSONL manifests, audio I/O, batching, synthetic corpus.

Modules (import what you need; the package itself imports nothing heavy):

* :mod:`~asr_adapt.data.types` - the :class:`Utterance` record.
* :mod:`~asr_adapt.data.audio` - ``load_audio`` (files and ``cmd |`` pipes -> 16 kHz mono).
* :mod:`~asr_adapt.data.kaldi` - ``read_data_dir``, ``write_data_dir``, ``load_utterances``
  (data dir, JSONL manifest or audio folder), ``validate``, ``fix``.
* :mod:`~asr_adapt.data.manifest` - ``read_manifest``, ``write_manifest``, converters.
* :mod:`~asr_adapt.data.sampling` - duration-bucketed batches, locale-balanced sampling.
* :mod:`~asr_adapt.data.synth` - the synthetic multilingual dictation corpus
  (:mod:`~asr_adapt.data.locales`, :mod:`~asr_adapt.data.synth_text`, :mod:`~asr_adapt.data.augment`).
"""
