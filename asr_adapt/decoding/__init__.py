"""Decoding: frozen options, lean greedy/beam search, batch decode jobs."""
