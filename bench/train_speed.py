"""Adapter training throughput: asr-adapt LoRA / S2-LoRA / LDA vs transformers + PEFT, side by side.

Same synthetic utterances (``asr-adapt synth``: espeak-ng speech, several locales, kept to
2-8 s), same whisper-base weights, same optimiser and learning rate, same per-step audio
budget, one epoch each, for

* ``lora``   asr-adapt per-locale LoRA on every ``q_proj``/``v_proj`` (the peer's targets, same rank)
* ``lora-shared`` the same LoRA, but one adapter (locale ``mul``) for every row, as the peer
  trains one LoRA on all locales; this isolates dynamic length + bucketing from per-locale routing
* ``s2lora`` asr-adapt S2-LoRA on the same targets, same rank
* ``lda``    asr-adapt language-dependent adapters after every block (0.4 % per locale)
* ``peer``   transformers + PEFT ``LoraConfig(target_modules=["q_proj", "v_proj"])`` with the
  ``WhisperFeatureExtractor`` default (inputs padded to 30 s), plain torch loop.

asr-adapt runs the encoder at the batch's real length, at least ``--min-window-s`` (the
window the adapters then decode at; the recipes use 6 s, and 1 s shows the full effect of
trimming), on duration-bucketed batches (lhotse). The bucket budget is searched so that
asr-adapt takes exactly as many optimiser updates per epoch as the peer's fixed batches.

After training, every system is judged on the same inputs with the same code: the peer's
LoRA (PEFT ``lora_A``/``lora_B``, same parametrisation) is copied into an asr-adapt model as
a one-adapter LoRA, and each system's dev loss is measured at 30 s (the peer's input) and at
``--min-window-s``, and dev WER by asr-adapt greedy decoding at ``--min-window-s``. The peer
is also decoded as its users would (``generate`` on 30 s features, forced language), and the
one-adapter LoRA's WER is tested for non-inferiority against the peer's (paired bootstrap).

Fairness under a shared, noisy machine: each system lives in its own worker process (which
also gives its peak RSS, ``ru_maxrss``), and the coordinator interleaves them one training
step at a time (round r: one step of every system, the starting system rotating), so load
changes hit all systems alike. Only the steps are timed (features, forward, backward,
optimiser); audio is read before timing. Dev loss is the same quantity for every system:
mean cross-entropy per target token (text tokens + end-of-text; the 4 prompt tokens are
given, not scored), asr-adapt at its training window, the peer at 30 s.

    python bench/train_speed.py --n 48 --n-dev 16                # reduced run
    python bench/train_speed.py --n 200 --n-dev 80 --min-window-s 6   # at the recipes' decode window
    python bench/train_speed.py --n 200 --n-dev 80 --min-window-s 1
    python bench/train_speed.py --device cuda                    # bf16 autocast on a GPU
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

SYSTEMS = ("lora", "lora-shared", "s2lora", "lda", "peer")
LABELS = {
    "lora": "asr-adapt LoRA q,v (dynamic, bucketed)",
    "lora-shared": "asr-adapt LoRA q,v, one adapter for all locales (dynamic, bucketed)",
    "s2lora": "asr-adapt S2-LoRA q,v (dynamic, bucketed)",
    "lda": "asr-adapt LDA (dynamic, bucketed)",
    "peer": "transformers + PEFT LoRA q,v (30 s padded)",
}
QV = r"\.(q_proj|v_proj)$"  # the peer's target_modules=["q_proj", "v_proj"], as a module-name regex
SHARED_LOCALE = "mul"  # ISO 639 "multiple languages": the one adapter of ``lora-shared``


# ----------------------------------------------------------------------------- data
def ensure_data(root: Path, locales: list[str], n_train_per_locale: int, n_dev_per_locale: int) -> None:
    """Synthesise train/dev with ``asr-adapt synth`` unless ``root`` already holds them."""
    if (root / "train" / "text").exists() and (root / "dev" / "text").exists():
        return
    cmd = [sys.executable, "-m", "asr_adapt.cli.main", "synth", "--locales", ",".join(locales),
           "--utts-per-locale", str(n_dev_per_locale), "--train-utts-per-locale", str(n_train_per_locale),
           "--splits", "train", "dev", "--seed", "0", str(root)]
    subprocess.run(cmd, check=True)


def pick(utts, n: int, lo: float = 2.0, hi: float = 8.0) -> list[dict]:
    """``n`` utterances of lo-hi seconds, balanced over locales (round-robin in id order)."""
    by_loc: dict[str, list] = {}
    for u in sorted(utts, key=lambda u: u.utt_id):
        if u.duration and lo <= u.duration <= hi:
            by_loc.setdefault(u.lang, []).append(u)
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in by_loc.values()):
        for loc in sorted(by_loc):
            if i < len(by_loc[loc]) and len(out) < n:
                u = by_loc[loc][i]
                out.append({"id": u.utt_id, "path": u.audio, "text": u.text, "lang": u.lang, "duration": u.duration})
        i += 1
    return out


# ----------------------------------------------------------------------------- systems
class Ours:
    """asr-adapt: WhisperBackbone + attached adapters, dynamic-length encoder, bucketed batches."""

    def __init__(self, kind: str, opts: dict, train: list[dict], locales: list[str]) -> None:
        self.shared = kind == "lora-shared"
        if self.shared:
            kind, locales = "lora", [SHARED_LOCALE]
        import torch

        from asr_adapt.adapters import attach_adapters, freeze_base
        from asr_adapt.data.sampling import BucketingConfig, DurationBucketingBatchSampler
        from asr_adapt.models.whisper import WhisperBackbone

        self.bb = WhisperBackbone.from_pretrained(opts["model"], device=opts["device"],
                                                  train_min_window_s=opts["min_window_s"])
        conf = {
            "lora": {"rank": opts["rank"], "alpha": opts["alpha"], "patterns": [QV]},
            "s2lora": {"rank": opts["rank"], "patterns": [QV]},
            "lda": {},
        }[kind]
        attach_adapters(self.bb, self.bb.injection_points(), kind, conf, locales)
        self.n_trainable, _ = freeze_base(self.bb)
        self.n_trainable_per_locale = self.n_trainable  # refined below for per-locale types
        params = [p for p in self.bb.parameters() if p.requires_grad]
        per_loc = sum(p.numel() for n, p in self.bb.named_parameters() if p.requires_grad and f".{locales[0]}." in n)
        shared = sum(p.numel() for n, p in self.bb.named_parameters()
                     if p.requires_grad and not any(f".{loc}." in n for loc in locales))
        self.n_trainable_per_locale = per_loc + shared
        self.opt = torch.optim.AdamW(params, lr=opts["lr"])
        durations = [u["duration"] for u in train]

        def batches(budget: float) -> list[list[int]]:
            sampler = DurationBucketingBatchSampler(durations, BucketingConfig(max_seconds=budget, num_buckets=4, seed=0))
            return [list(b) for b in sampler]

        budget = opts["batch_size"] * sum(durations) / len(durations)
        self.batches = batches(budget)
        if opts["equal_updates"]:
            budget, self.batches = budget_for_updates(batches, budget, -(-len(train) // opts["batch_size"]))
        self.budget_s = budget
        self.device = opts["device"]

    def loss(self, wavs, texts, langs):
        from asr_adapt import routing
        from asr_adapt.adapters import regularization_loss

        with routing.use(self.route(langs)):
            return self.bb.compute_loss(wavs, texts, langs) + regularization_loss(self.bb, set(self.route(langs)))

    def route(self, langs):
        """Adapter locale per row: the row's locale, or the one shared adapter."""
        return [SHARED_LOCALE] * len(langs) if self.shared else list(langs)

    def train_mode(self, on: bool) -> None:
        self.bb.train(on)

    def dev_loss_sum(self, wavs, texts, langs) -> tuple[float, int]:
        return backbone_loss_sum(self.bb, self.route, wavs, texts, langs)


def backbone_loss_sum(bb, route, wavs, texts, langs) -> tuple[float, int]:
    """(sum of token CE, number of target tokens) of an asr-adapt backbone on one dev batch,
    at its ``train_min_window_s``; ``route(langs)`` gives each row's adapter."""
    from asr_adapt import routing

    _, labels = bb.teacher_forcing(texts, langs)
    n = int((labels != -100).sum())
    with routing.use(route(langs)):
        return float(bb.compute_loss(wavs, texts, langs)) * n, n


def dev_batches(dev: list[dict], batch_size: int) -> list[list[int]]:
    """Dev utterance indices, sorted by duration, in batches (the same for every system)."""
    order = sorted(range(len(dev)), key=lambda i: dev[i]["duration"])
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def dev_loss(loss_sum, dev: list[dict], dw: list, batch_size: int) -> tuple[float, int]:
    """(mean token CE, tokens) over the dev set; ``loss_sum(wavs, texts, langs)`` -> (sum, n)."""
    tot, ntok = 0.0, 0
    for idx in dev_batches(dev, batch_size):
        ce, n = loss_sum([dw[i] for i in idx], [dev[i]["text"] for i in idx], [dev[i]["lang"] for i in idx])
        tot, ntok = tot + ce, ntok + n
    return tot / ntok, ntok


def budget_for_updates(batches, start: float, n_updates: int) -> tuple[float, list[list[int]]]:
    """The bucket budget (s) nearest ``start`` whose epoch has exactly ``n_updates`` batches, and its batches.

    ``batches(budget)`` -> list of batches. The count falls as the budget grows, but not
    strictly (lhotse's buckets fill unevenly), so budgets from 0.5x to 2x ``start`` are tried
    in 0.1 s steps, nearest first.
    """
    grid = [round(start + k * 0.1, 3) for k in range(-int(start * 5), int(start * 10) + 1)]
    for budget in sorted(grid, key=lambda b: abs(b - start)):
        got = batches(budget)
        if len(got) == n_updates:
            return budget, got
    raise RuntimeError(f"no bucket budget within 0.5-2x {start:.1f} s gives {n_updates} batches; "
                       "run with --no-equal-updates")


class Peer:
    """transformers + PEFT LoRA on q_proj/v_proj, features padded to 30 s, plain torch loop."""

    def __init__(self, opts: dict, train: list[dict]) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

        from asr_adapt.models.resolver import resolve_model

        path = str(resolve_model(opts["model"]))
        model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
        cfg = LoraConfig(r=opts["rank"], lora_alpha=opts["alpha"], lora_dropout=0.0,
                         target_modules=["q_proj", "v_proj"])
        self.model = get_peft_model(model, cfg).to(opts["device"])
        self.fe = WhisperFeatureExtractor.from_pretrained(path)
        self.tok = WhisperTokenizer.from_pretrained(path)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.n_trainable = self.n_trainable_per_locale = sum(p.numel() for p in params)
        self.opt = torch.optim.AdamW(params, lr=opts["lr"])
        order = list(range(len(train)))
        random.Random(0).shuffle(order)
        bs = opts["batch_size"]
        self.batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        self.device = opts["device"]

    def _tensors(self, wavs, texts, langs):
        import torch

        feats = self.fe(list(wavs), sampling_rate=16000, return_tensors="pt").input_features  # (B, 80, 3000)
        # Labels as the usual recipe builds them (prompt + text + eot), scored like asr-adapt:
        # prompt positions masked, so both report CE per predicted text token.
        seqs = []
        for text, lang in zip(texts, langs):
            lang_tok = f"<|{lang.split('-')[0]}|>"
            prompt = self.tok.convert_tokens_to_ids(["<|startoftranscript|>", lang_tok, "<|transcribe|>",
                                                     "<|notimestamps|>"])
            ids = self.tok(" " + text.strip(), add_special_tokens=False).input_ids
            seqs.append((prompt, prompt + ids + [self.tok.eos_token_id]))
        u = max(len(s) for _, s in seqs) - 1
        inputs = torch.full((len(seqs), u), self.tok.eos_token_id, dtype=torch.long)
        labels = torch.full((len(seqs), u), -100, dtype=torch.long)
        for i, (p, s) in enumerate(seqs):
            t = torch.tensor(s)
            inputs[i, : len(s) - 1] = t[:-1]
            labels[i, len(p) - 1 : len(s) - 1] = t[len(p) :]
        return feats.to(self.device), inputs.to(self.device), labels.to(self.device)

    def _ce(self, wavs, texts, langs, reduction: str):
        from torch import nn

        feats, inputs, labels = self._tensors(wavs, texts, langs)
        logits = self.model(input_features=feats, decoder_input_ids=inputs).logits
        ce = nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                                         reduction=reduction)
        return ce, int((labels != -100).sum())

    def loss(self, wavs, texts, langs):
        return self._ce(wavs, texts, langs, "mean")[0]

    def train_mode(self, on: bool) -> None:
        self.model.train(on)

    def dev_loss_sum(self, wavs, texts, langs) -> tuple[float, int]:
        ce, n = self._ce(wavs, texts, langs, "sum")
        return float(ce), n


def peer_to_ours(peer_model, opts: dict):
    """An asr-adapt WhisperBackbone carrying the peer's trained LoRA as the one adapter ``mul``.

    PEFT's ``lora_A.weight`` (r, D_in) and ``lora_B.weight`` (D_out, r) with scale alpha/r are
    asr-adapt's ``A``, ``B`` and scale, so the copy computes the same function.
    """
    import torch

    from asr_adapt.adapters import attach_adapters
    from asr_adapt.adapters.registry import ADAPTERS
    from asr_adapt.models.whisper import WhisperBackbone

    bb = WhisperBackbone.from_pretrained(opts["model"], device=opts["device"], train_min_window_s=opts["min_window_s"])
    attach_adapters(bb, bb.injection_points(), "lora", {"rank": opts["rank"], "alpha": opts["alpha"], "patterns": [QV]},
                    [SHARED_LOCALE])
    ours = dict(bb.named_modules())
    copied = 0
    with torch.no_grad():
        for name, mod in peer_model.named_modules():
            if not hasattr(mod, "lora_A") or "default" not in getattr(mod, "lora_A", {}):
                continue
            target = re.search(r"(encoder|decoder)\.layers\.\d+\..*$", name).group(0)  # PEFT wraps the names
            pair = getattr(ours[target], ADAPTERS.get("lora").bank_attr)[SHARED_LOCALE]
            pair.A.copy_(mod.lora_A["default"].weight)
            pair.B.copy_(mod.lora_B["default"].weight)
            copied += 1
    if copied != sum(1 for n in ours if re.search(QV, n)):
        raise RuntimeError(f"copied {copied} LoRA pairs; expected one per q_proj/v_proj")
    bb.eval()
    return bb


def evaluate(bb, route, dev: list[dict], dw: list, opts: dict) -> dict:
    """Dev loss at 30 s and at the training window, and dev hypotheses decoded at that window,
    all through asr-adapt's code (the same for every system)."""
    import torch

    from asr_adapt.decoding.decoders import decoding_options, transcribe_batch

    bb.eval()
    bs = opts["batch_size"]
    out: dict = {"dev_loss": {}}
    keep = bb.train_min_window_s
    for window in sorted({30.0, float(opts["min_window_s"])}):
        bb.train_min_window_s = window
        with torch.no_grad():
            loss, _ = dev_loss(lambda w, t, la: backbone_loss_sum(bb, route, w, t, la), dev, dw, bs)
        out["dev_loss"][f"{window:g}s"] = loss
    bb.train_min_window_s = keep
    opts_dec = decoding_options(bb, min_window_s=float(opts["min_window_s"]))
    hyps: dict[str, str] = {}
    t0 = time.perf_counter()
    for idx in dev_batches(dev, bs):
        langs = [dev[i]["lang"] for i in idx]
        res = transcribe_batch(bb, [dw[i] for i in idx], langs, opts_dec, route=route(langs))
        hyps.update({dev[i]["id"]: h.text for i, h in zip(idx, res)})
    out["hyps"] = hyps
    out["decode_s"] = time.perf_counter() - t0
    return out


def peer_generate(peer: Peer, dev: list[dict], dw: list, opts: dict) -> dict[str, str]:
    """The peer decoded as its users run it: ``generate`` on 30 s features, greedy, language
    forced per row, at most 20 tokens per second of audio + 16."""
    import torch

    peer.model.eval()
    hyps: dict[str, str] = {}
    by_lang: dict[str, list[int]] = {}
    for i in sorted(range(len(dev)), key=lambda i: dev[i]["duration"]):
        by_lang.setdefault(dev[i]["lang"], []).append(i)
    bs = opts["batch_size"]
    with torch.no_grad():
        for lang, ids in sorted(by_lang.items()):
            for s in range(0, len(ids), bs):
                idx = ids[s : s + bs]
                feats = peer.fe([dw[i] for i in idx], sampling_rate=16000, return_tensors="pt").input_features
                cap = int(20 * max(dev[i]["duration"] for i in idx)) + 16
                out = peer.model.generate(input_features=feats.to(peer.device), language=lang.split("-")[0],
                                          task="transcribe", max_new_tokens=cap, do_sample=False, num_beams=1)
                texts = peer.tok.batch_decode(out, skip_special_tokens=True)
                hyps.update({dev[i]["id"]: t.strip() for i, t in zip(idx, texts)})
    return hyps


# ----------------------------------------------------------------------------- worker
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def worker(conn, system: str, opts: dict, train: list[dict], dev: list[dict], locales: list[str]) -> None:
    """One system in its own process; answers ("step", i), ("dev",), ("stats",), ("stop",)."""
    import contextlib

    import torch

    from asr_adapt.data.audio import load_audio

    torch.set_num_threads(opts["threads"])
    torch.manual_seed(0)
    sysobj = Peer(opts, train) if system == "peer" else Ours(system, opts, train, locales)
    tw = [load_audio(u["path"]) for u in train]
    dw = [load_audio(u["path"]) for u in dev]
    rss_loaded = _rss_mb()
    cuda = opts["device"].startswith("cuda")

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    conn.send({"ready": True, "n_batches": len(sysobj.batches), "n_trainable": sysobj.n_trainable,
               "n_trainable_per_locale": sysobj.n_trainable_per_locale,
               "budget_s": getattr(sysobj, "budget_s", None)})
    while True:
        cmd = conn.recv()
        if cmd[0] == "step":
            idx = sysobj.batches[cmd[1]]
            sysobj.train_mode(True)
            sync()
            t0 = time.perf_counter()
            with autocast():
                loss = sysobj.loss([tw[i] for i in idx], [train[i]["text"] for i in idx], [train[i]["lang"] for i in idx])
            loss.backward()
            sysobj.opt.step()
            sysobj.opt.zero_grad(set_to_none=True)
            sync()
            conn.send({"seconds": time.perf_counter() - t0, "loss": float(loss.detach()), "n": len(idx)})
        elif cmd[0] == "dev":
            sysobj.train_mode(False)
            t0 = time.perf_counter()
            with torch.no_grad(), autocast():
                loss, ntok = dev_loss(sysobj.dev_loss_sum, dev, dw, opts["batch_size"])
            conn.send({"dev_loss": loss, "tokens": ntok, "seconds": time.perf_counter() - t0})
        elif cmd[0] == "eval":
            if system == "peer":
                res = evaluate(peer_to_ours(sysobj.model, opts), lambda langs: [SHARED_LOCALE] * len(langs), dev, dw, opts)
                t0 = time.perf_counter()
                res["hyps_as_users"] = peer_generate(sysobj, dev, dw, opts)
                res["decode_as_users_s"] = time.perf_counter() - t0
            else:
                res = evaluate(sysobj.bb, sysobj.route, dev, dw, opts)
            conn.send(res)
        elif cmd[0] == "stats":
            conn.send({"rss_loaded_mb": rss_loaded, "peak_rss_mb": _rss_mb()})
        else:
            conn.send({"bye": True})
            return


# ----------------------------------------------------------------------------- coordinator
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="bench/out/train_speed/data", help="asr-adapt synth output (made if absent)")
    ap.add_argument("--locales", default="de-DE,es-ES,ru-RU,it-IT")
    ap.add_argument("--n", type=int, default=200, help="training utterances (2-8 s)")
    ap.add_argument("--n-dev", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8, help="peer batch size; asr-adapt budget = this x mean duration")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-window-s", type=float, default=1.0, help="asr-adapt train_min_window_s")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (2 are no faster here)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="whisper-base")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--no-dev-before", action="store_true", help="skip the dev loss before training")
    ap.add_argument("--equal-updates", action=argparse.BooleanOptionalAction, default=True,
                    help="size asr-adapt's bucket budget so an epoch has as many updates as the peer's")
    ap.add_argument("--no-eval", action="store_true", help="skip the common evaluation after training")
    ap.add_argument("--out", default="bench/out/train_speed/results.json")
    args = ap.parse_args(argv)

    from asr_adapt.data.kaldi import read_data_dir

    locales = args.locales.split(",")
    root = Path(args.data)
    # ~80 % of synth clips fall in 2-8 s; 75/locale gives 237 of 300 with the default locales.
    ensure_data(root, locales, max(75, args.n // len(locales) * 5 // 4 + 5), max(16, args.n_dev // len(locales) * 5 // 4 + 4))
    train = pick(read_data_dir(root / "train"), args.n)
    dev = pick(read_data_dir(root / "dev"), args.n_dev)
    systems = args.systems.split(",")
    opts = {k: getattr(args, k) for k in ("rank", "alpha", "lr", "min_window_s", "threads", "device", "model",
                                           "batch_size", "equal_updates")}
    loads = [os.getloadavg()[0]]
    ctx = mp.get_context("spawn")
    conns, procs, info = {}, {}, {}
    for s in systems:
        a, b = ctx.Pipe()
        p = ctx.Process(target=worker, args=(b, s, opts, train, dev, locales), daemon=True)
        p.start()
        b.close()  # only the worker holds its end: a worker that dies then ends our recv() with EOFError
        conns[s], procs[s] = a, p
    for s in systems:
        info[s] = conns[s].recv()
        print(f"{s}: {info[s]['n_batches']} steps, {info[s]['n_trainable']} trainable", file=sys.stderr, flush=True)
    res = {s: {"steps": [], **info[s]} for s in systems}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        meta = {"args": vars(args), "train_audio_s": sum(u["duration"] for u in train),
                "dev_audio_s": sum(u["duration"] for u in dev), "loadavg_1min_samples": loads,
                "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        out.write_text(json.dumps({"meta": meta, "results": res}, indent=1))

    def ask(s, cmd):
        conns[s].send(cmd)
        return conns[s].recv()

    if not args.no_dev_before:
        for s in systems:
            res[s]["dev_before"] = ask(s, ("dev",))
            print(f"{s}: dev loss before {res[s]['dev_before']['dev_loss']:.3f}", file=sys.stderr, flush=True)
        save()
    n_rounds = max(res[s]["n_batches"] for s in systems)
    for r in range(n_rounds):
        order = systems[r % len(systems):] + systems[: r % len(systems)]  # rotate who goes first
        for s in order:
            if r < res[s]["n_batches"]:
                res[s]["steps"].append(ask(s, ("step", r)))
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}/{n_rounds} load {loads[-1]:.1f} "
              + " ".join(f"{s}={res[s]['steps'][-1]['seconds']:.1f}s" for s in systems if r < res[s]["n_batches"]),
              file=sys.stderr, flush=True)
        save()
    for s in systems:
        res[s]["dev_after"] = ask(s, ("dev",))
        res[s].update(ask(s, ("stats",)))
        save()
    if not args.no_eval:
        for s in systems:
            res[s]["eval"] = ask(s, ("eval",))
            print(f"{s}: evaluated ({res[s]['eval']['decode_s']:.0f} s decoding)", file=sys.stderr, flush=True)
            save()
    for s in systems:
        ask(s, ("stop",))
        procs[s].join(timeout=30)
    loads.append(os.getloadavg()[0])
    wer_report = None if args.no_eval else wer_tests(res, systems, dev)
    save()
    if wer_report is not None:
        out.with_suffix(".wer.json").write_text(json.dumps(wer_report, indent=1))
    print(format_table(res, systems, len(train), len(dev), args, loads))
    if wer_report is not None:
        print()
        print(format_eval(res, systems, wer_report, args))
    return 0


def wer_tests(res: dict, systems: list[str], dev: list[dict]) -> dict:
    """Dev WER of every system (asr-adapt decoding at the training window; the peer also as its
    users decode), and paired-bootstrap non-inferiority of the like-for-like LoRA against the peer."""
    sys.path.insert(0, str(Path(__file__).parent))
    from speed_common import noninferiority, wer

    refs = [u["text"] for u in dev]
    ids = [u["id"] for u in dev]
    hyps = {s: [res[s]["eval"]["hyps"][i] for i in ids] for s in systems}
    if "peer" in systems:
        hyps["peer-as-users"] = [res["peer"]["eval"]["hyps_as_users"][i] for i in ids]
    report = {"wer": {k: wer(refs, v) for k, v in hyps.items()}, "tests": []}
    if "peer" in systems:
        for s in ("lora-shared", "lora", "lda"):
            for ref in ("peer", "peer-as-users"):
                if s in hyps:
                    report["tests"].append({"system": s, "reference": ref,
                                            **noninferiority(refs, hyps[s], hyps[ref], "all")})
    return report


def format_eval(res: dict, systems: list[str], report: dict, args) -> str:
    w = args.min_window_s
    lines = [
        f"Common evaluation: dev loss (CE per target token) of every system through asr-adapt's model at 30 s "
        f"and at {w:g} s; dev WER by asr-adapt greedy decoding at {w:g} s (the peer's LoRA copied in)",
        "",
        f"| system | dev loss @30 s | dev loss @{w:g} s | dev WER % |",
        "|---|---|---|---|",
    ]
    for s in systems:
        dl = res[s]["eval"]["dev_loss"]
        lines.append(f"| {LABELS[s]} | {dl['30s']:.4f} | {dl[f'{w:g}s']:.4f} | {report['wer'][s]:.2f} |")
    if "peer-as-users" in report["wer"]:
        lines.append(f"| transformers + PEFT, decoded with `generate` at 30 s | - | - | {report['wer']['peer-as-users']:.2f} |")
    if report["tests"]:
        lines += ["", "| system | vs | WER diff (points) | 90 % CI | non-inferior (margin 1) |", "|---|---|---|---|---|"]
        for t in report["tests"]:
            lines.append(f"| {t['system']} | {t['reference']} | {t['diff']:+.2f} | "
                         f"[{t['ci90'][0]:+.2f}, {t['ci90'][1]:+.2f}] | {'yes' if t['noninferior'] else 'no'} |")
    return "\n".join(lines)


def format_table(res: dict, systems: list[str], n_train: int, n_dev: int, args, loads: list[float]) -> str:
    """Markdown table; ratios are relative to the peer when it ran."""
    for s in systems:
        r = res[s]
        r["epoch_s"] = sum(x["seconds"] for x in r["steps"])
        r["utt_per_s"] = n_train / r["epoch_s"]
    ref = res.get("peer")
    budgets = ", ".join(sorted({f"{res[s]['budget_s']:.1f} s" for s in systems if res[s].get("budget_s")}))
    lines = [
        f"{n_train} train / {n_dev} dev utterances, 1 epoch, device {args.device}, {args.threads} thread(s) per "
        f"system, batch {args.batch_size} (peer) / {args.batch_size} x mean duration s (asr-adapt), "
        f"train_min_window_s {args.min_window_s}, rank {args.rank}, lr {args.lr}; asr-adapt bucket budget "
        f"{budgets or '-'}; "
        f"1-min load average during the run: min {min(loads):.1f}, mean {sum(loads) / len(loads):.1f}, "
        f"max {max(loads):.1f}",
        "",
        "| system | trainable / locale | steps | s / epoch | utt/s | speed vs peer | dev loss before | "
        "dev loss after | peak RSS MB | RSS vs peer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in systems:
        r = res[s]
        speed = f"{ref['epoch_s'] / r['epoch_s']:.2f}x" if ref else "-"
        rss = f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x" if ref else "-"
        before = f"{r['dev_before']['dev_loss']:.3f}" if "dev_before" in r else "-"
        lines.append(
            f"| {LABELS[s]} | {r['n_trainable_per_locale']:,} | {r['n_batches']} | {r['epoch_s']:.1f} | "
            f"{r['utt_per_s']:.3f} | {speed} | {before} | {r['dev_after']['dev_loss']:.3f} | "
            f"{r['peak_rss_mb']:.0f} | {rss} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
