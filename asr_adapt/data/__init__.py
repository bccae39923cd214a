"""Data layer: Kaldi data dirs, JSONL manifests, audio I/O, batching, synthetic corpus."""
