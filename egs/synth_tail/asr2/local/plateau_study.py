#!/usr/bin/env python3
"""Why does the transducer stay on the blank plateau? Controlled training runs on cached features.

Each run trains the toolkit's own backbone (``TransducerBackbone``: the same encoder,
predictor, joiner, ``rnnt_loss`` and optional CTC heads) from one init directory on the
same cached, normalised features and the same batches (seeded), changing one thing at a
time: the loss (transducer / CTC / both), optimiser settings, chunking, frame rate. Every
``--eval-every`` steps it logs to ``OUT/log.jsonl``:

* dev loss and greedy CER of the second pass (full context) and of the first pass under a
  320 ms chunk mask (what streaming decodes), and CTC greedy CER when a CTC head exists;
* ``nonblank``: emitted tokens / reference tokens (0 on the plateau);
* ``tanh_grad``: mean 1 - tanh^2 of the joiner's hidden layer (near 0: saturated, no
  gradient reaches the encoder; about 0.76 for a fresh joiner);
* ``enc_grad`` / ``joiner_grad``: gradient norms of the last training step.

Usage (one thread per run; two runs side by side on two cores)::

    python local/plateau_study.py --data data --init exp/study_init -o exp/study/ctc_only \\
        --rnnt-weight 0 --ctc-weight 1 --steps 600

``--cache`` keeps the features between runs (computed once with the init's CMVN).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data", help="data root with train/ and dev/ Kaldi dirs")
    p.add_argument("--init", required=True, help="model directory (preset + tokenizer + CMVN) to start from")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--cache", default=None, help="feature cache file (default: <init>/feats-<subsets>.pt)")
    p.add_argument("--locales", nargs="+", default=["en-US", "de-DE", "fr-FR", "es-ES", "ru-RU", "pl-PL"])
    p.add_argument("--dev-per-locale", type=int, default=15)
    p.add_argument("--override", default="{}", help="JSON config overrides, e.g. '{\"subsampling\": 8}' (re-initialises)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--max-minutes", type=float, default=0, help="stop after this wall time (0: no limit)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch-seconds", type=float, default=60.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--min-ratio", type=float, default=0.1)
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--decay-all", action="store_true", help="weight decay on biases/norms/embeddings too (old recipe)")
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--rnnt-weight", type=float, default=1.0, help="0: CTC only (no joiner loss)")
    p.add_argument("--ctc-weight", type=float, default=0.0, help="CTC head weight (adds heads if the init has none)")
    p.add_argument("--chunking", choices=["dynamic", "full"], default="dynamic")
    p.add_argument("--dynamic-after", type=int, default=0, help="full context before this step, then dynamic")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", action="store_true", help="save the final model directory to OUT/model")
    p.add_argument("--init-from", default=None, help="load matching weights from this model directory (warm start)")
    p.add_argument("--reference", choices=["torchaudio"], default=None,
                   help="train torchaudio's own transducer (Conformer transcriber, LSTM predictor, "
                        "relu joiner; the librispeech conformer_rnnt recipe's loss and optimiser) instead")
    return p.parse_args(argv)


class ReferenceTransducer:
    """torchaudio's RNNT (``torchaudio.models.RNNT``) with a Conformer transcriber, sized like ours.

    As in torchaudio's ``conformer_rnnt`` LibriSpeech recipe: time reduction by frame stacking,
    a linear input layer, ``torchaudio.models.Conformer``, an LSTM predictor with layer norm,
    a relu joiner, blank = the last symbol, ``rnnt_loss(reduction="sum")`` / batch size, Adam
    (0.9, 0.98, eps 1e-9) and gradient clipping at 10 (set by the caller).
    """

    def __init__(self, vocab: int, stride: int, d: int, heads: int, ffn: int, layers: int, kernel: int):
        import torch
        from torchaudio.models import RNNT, Conformer
        from torchaudio.models.rnnt import _Joiner, _Predictor, _TimeReduction

        class Transcriber(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.reduce = _TimeReduction(stride)
                self.inp = torch.nn.Linear(80 * stride, d)
                self.conformer = Conformer(d, heads, ffn, layers, kernel, dropout=0.1)
                self.out = torch.nn.Linear(d, 256)

            def forward(self, input, lengths):  # noqa: A002 (torchaudio's RNNT calls it by this name)
                x, lengths = self.reduce(input, lengths)
                x, lengths = self.conformer(self.inp(x), lengths)
                return self.out(x), lengths

        self.blank = vocab  # torchaudio's recipe: blank is the last symbol
        self.model = RNNT(Transcriber(), _Predictor(vocab + 1, 256, 192, 1, 256, True, 1e-3, 0.1),
                          _Joiner(256, vocab + 1, "relu"))

    def loss(self, x, lens, targets, tlens):
        import torch
        import torchaudio

        b = targets.shape[0]
        pre = torch.cat([torch.full((b, 1), self.blank, dtype=targets.dtype), targets], 1)
        logits, src_lens, _, _ = self.model(x, lens, pre, tlens + 1)
        return torchaudio.functional.rnnt_loss(logits.float(), targets.int(), src_lens.int(), tlens.int(),
                                               blank=self.blank, reduction="sum") / b

    def greedy(self, x, lens, max_symbols: int = 3) -> list[list[int]]:
        """Batched greedy search over the transcriber output (LSTM state per row)."""
        import torch

        m = self.model
        enc, enc_lens = m.transcribe(x, lens)
        b = x.shape[0]
        tok = torch.full((b, 1), self.blank, dtype=torch.long)
        pred, _, state = m.predict(tok, torch.ones(b, dtype=torch.long), None)
        hyps = [[] for _ in range(b)]
        for t in range(enc.shape[1]):
            active = t < enc_lens
            for _ in range(max_symbols):
                logits, _, _ = m.join(enc[:, t : t + 1], torch.ones(b, dtype=torch.long), pred,
                                      torch.ones(b, dtype=torch.long))
                best = logits[:, 0, 0].argmax(-1)
                emit = active & (best != self.blank)
                if not bool(emit.any()):
                    break
                new_pred, _, new_state = m.predict(best[:, None], torch.ones(b, dtype=torch.long), state)
                keep = emit[:, None, None]
                pred = torch.where(keep, new_pred, pred)
                state = [[torch.where(emit[:, None], n, o) for n, o in zip(ns, os)] for ns, os in zip(new_state, state)]
                for i in emit.nonzero().flatten().tolist():
                    hyps[i].append(int(best[i]))
                active = emit
        return hyps


def build_cache(model, data_root: Path, locales, dev_per_locale, cache: Path):
    """{split: [(feats (T, F) normalised, text, lang)]} for train and a dev subset; saved to ``cache``."""
    import torch
    from tqdm import tqdm

    from asr_adapt.data.kaldi import load_utterances

    if cache.exists():
        return torch.load(cache, weights_only=False)
    out = {}
    for split in ("train", "dev"):
        utts = [u for u in load_utterances(data_root / split) if u.lang in locales and u.text]
        if split == "dev":
            per: dict[str, list] = {}
            for u in utts:
                per.setdefault(u.lang, []).append(u)
            utts = [u for loc in locales for u in per.get(loc, [])[:dev_per_locale]]
        rows = []
        with torch.no_grad():
            for u in tqdm(utts, desc=f"features {split}", file=sys.stderr, mininterval=30):
                f, n = model.features([u.load()])
                rows.append((f[0, : int(n[0])].clone(), u.text, u.lang))
        out[split] = rows
    torch.save(out, cache)
    return out


def batches(rows, batch_seconds: float, rng: random.Random):
    """Duration-sorted buckets of at most ``batch_seconds`` padded audio, in shuffled order."""
    order = sorted(range(len(rows)), key=lambda i: rows[i][0].shape[0])
    out, cur = [], []
    for i in order:
        t = rows[i][0].shape[0] * 0.01
        if cur and t * (len(cur) + 1) > batch_seconds:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def collate(rows, idx):
    import torch

    feats = [rows[i][0] for i in idx]
    lens = torch.tensor([f.shape[0] for f in feats])
    x = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1])
    for k, f in enumerate(feats):
        x[k, : f.shape[0]] = f
    return x, lens, [rows[i][1] for i in idx], [rows[i][2] for i in idx]


def grad_norm(params) -> float:
    import torch

    g = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.stack(g).norm()) if g else 0.0


def optimiser_step(loss, model, opt, sched, clip: float, *norm_groups) -> list[float]:
    """Backward, clip, step; returns the pre-clipping gradient norm of each parameter group."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    norms = [grad_norm(g) for g in norm_groups]
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    sched.step()
    return norms


def param_groups(model, weight_decay: float, decay_all: bool):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim < 2 or "embedding" in name or "norm" in name
        (no_decay if plain and not decay_all else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def evaluate(model, dev, ctc: bool, rnnt: bool = True):
    """Dev metrics (see module docstring) in batches of 16; ``rnnt=False`` skips the transducer search."""
    import jiwer
    import torch

    from asr_adapt.decoding.transducer_search import TransducerDecodingOptions, greedy_search

    model.eval()
    refs, hyp2, hyp1, hypc, losses, tg = [], [], [], [], [], []
    opts = TransducerDecodingOptions()
    chunk = 320 // model.config.frame_ms
    with torch.no_grad():
        for s in range(0, len(dev), 16):
            x, lens, texts, langs = collate(dev, range(s, min(len(dev), s + 16)))
            terms = model.loss_terms_from_features(x, lens, texts, langs, -1, -1)
            losses.append(float(terms["loss"]))
            full = model.encode(x, lens, -1, -1)
            streamed = model.encode(x, lens, chunk, -1, second_pass=False)
            for name, enc, sink in (("second_pass", full.second, hyp2), ("first_pass", streamed.first, hyp1)):
                if not rnnt:  # an untrained joiner emits max_symbols per frame: slow and meaningless
                    sink += [""] * len(texts)
                    continue
                enc_p = model.joiner.project_encoder(enc, name)
                sink += [model.tokenizer.decode(r.tokens) for r in greedy_search(model, enc_p, full.lengths, opts)]
            if ctc:
                ids = model.ctc_log_probs(full.second, "second_pass").argmax(-1)
                for row, n in zip(ids, full.lengths * model.ctc_upsample):
                    seq = torch.unique_consecutive(row[: int(n)]).tolist()
                    hypc.append(model.tokenizer.decode([t for t in seq if t != 0]))
            # joiner saturation on the lattice of the reference
            targets, tl = model.encode_targets(texts)
            blank = model.predictor.start_context(len(texts))[:, :1]
            dec_p = model.joiner.project_decoder(model.predictor(torch.cat([blank, targets], 1)))
            h = model.joiner.project_encoder(full.second, "second_pass")[:, :, None] + dec_p[:, None]
            tg.append(float((1 - torch.tanh(h) ** 2).mean()))
            refs += texts
    model.train()
    ntok = sum(len(model.tokenizer.encode(r)) for r in refs)
    out = {
        "dev_loss": sum(losses) / len(losses),
        "cer_full": 100 * jiwer.cer(refs, hyp2),
        "cer_stream320": 100 * jiwer.cer(refs, hyp1),
        "nonblank": sum(len(model.tokenizer.encode(h)) for h in hyp2) / max(1, ntok),
        "tanh_grad": sum(tg) / len(tg),
        "example": [refs[0], hyp2[0] if rnnt else hypc[0]],
    }
    if ctc:
        out["cer_ctc"] = 100 * jiwer.cer(refs, hypc)
    return out


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from asr_adapt.models.transducer import TransducerBackbone, TransducerConfig
    from asr_adapt.training.schedulers import WarmupConstant, WarmupCosine

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    init = TransducerBackbone.from_pretrained(args.init)
    cache = Path(args.cache or Path(args.init) / "feats.pt")
    data = build_cache(init, Path(args.data), args.locales, args.dev_per_locale, cache)
    overrides = json.loads(args.override)
    if args.ctc_weight > 0:
        overrides.setdefault("ctc_weight", args.ctc_weight)
    if overrides:  # a new architecture: fresh weights, the init's tokenizer and CMVN
        cfg = TransducerConfig.from_dict({**init.config.to_dict(), **overrides})
        model = TransducerBackbone(cfg, init.tokenizer)
        model.cmvn.load_state_dict(init.cmvn.state_dict())
    else:
        model = init
    if args.init_from:
        src = TransducerBackbone.from_pretrained(args.init_from).state_dict()
        own = model.state_dict()
        take = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(take, strict=False)
        print(f"warm start: {len(take)}/{len(own)} tensors from {args.init_from}", file=sys.stderr)
    if args.reference:
        return train_reference(args, model, data, out)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay, args.decay_all), lr=args.lr, betas=(0.9, 0.98))
    sched = (WarmupCosine(opt, args.warmup, args.steps, args.min_ratio) if args.schedule == "cosine"
             else WarmupConstant(opt, args.warmup))
    rng = random.Random(args.seed)
    train, dev = data["train"], data["dev"]
    enc_params = list(model.encoder.parameters())
    joiner_params = list(model.joiner.parameters())
    meta = {"args": vars(args), "params": n_params, "config": model.config.to_dict(),
            "train_utts": len(train), "train_hours": sum(r[0].shape[0] for r in train) / 360000}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    log = open(out / "log.jsonl", "a")
    step, t0, epoch, losses = 0, time.time(), 0, []
    print(f"{n_params} parameters, {len(train)} train utts ({meta['train_hours']:.2f} h)", file=sys.stderr)
    done = False
    while not done:
        epoch += 1
        for idx in batches(train, args.batch_seconds, rng):
            x, lens, texts, langs = collate(train, idx)
            if args.chunking == "full" or step < args.dynamic_after:
                chunk, left = -1, -1
            else:
                chunk, left = model.sample_chunking()
            terms = model.loss_terms_from_features(x, lens, texts, langs, chunk, left)
            if args.rnnt_weight == 0:  # CTC only: the heads alone, no joiner in the graph
                loss = sum(v for k, v in terms.items() if k.startswith("ctc_")) / 2
            else:
                loss = terms["loss"]
            eg, jg = optimiser_step(loss, model, opt, sched, args.clip, enc_params, joiner_params)
            step += 1
            losses.append(float(loss.detach()))
            minutes = (time.time() - t0) / 60
            stop = step >= args.steps or (args.max_minutes and minutes >= args.max_minutes)
            if step % args.eval_every == 0 or stop or step == 1:
                rec = {"step": step, "epoch": epoch, "minutes": round(minutes, 2),
                       "train_loss": sum(losses) / len(losses), "enc_grad": eg, "joiner_grad": jg,
                       "lr": sched.get_last_lr()[0], **evaluate(model, dev, model.ctc is not None, args.rnnt_weight > 0)}
                losses = []
                log.write(json.dumps(rec, ensure_ascii=False) + "\n")
                log.flush()
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec.items()},
                                 ensure_ascii=False), file=sys.stderr)
            if stop:
                done = True
                break
    if args.save:
        model.save_pretrained(out / "model")
    return 0


def train_reference(args, ours, data, out: Path) -> int:
    """The torchaudio reference on the same cached features and batches as our runs."""
    import jiwer
    import torch

    from asr_adapt.training.schedulers import WarmupCosine

    cfg = ours.config
    ref = ReferenceTransducer(cfg.vocab_size, cfg.subsampling, cfg.d_model, cfg.num_heads, cfg.ffn_dim,
                              cfg.first_pass_layers + cfg.second_pass_layers, cfg.conv_kernel)
    model, tok = ref.model, ours.tokenizer
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9)
    sched = WarmupCosine(opt, args.warmup, args.steps, args.min_ratio)
    meta = {"args": vars(args), "params": sum(p.numel() for p in model.parameters()), "reference": "torchaudio.models.RNNT"}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    log, rng, step, t0, losses = open(out / "log.jsonl", "a"), random.Random(args.seed), 0, time.time(), []
    train, dev = data["train"], data["dev"]

    def evaluate_ref():
        model.eval()
        refs, hyps, dl = [], [], []
        with torch.no_grad():
            for s in range(0, len(dev), 16):
                x, lens, texts, _ = collate(dev, range(s, min(len(dev), s + 16)))
                targets, tl = ours.encode_targets(texts)
                dl.append(float(ref.loss(x, lens, targets, tl)))
                hyps += [tok.decode(h) for h in ref.greedy(x, lens)]
                refs += texts
        model.train()
        return {"dev_loss": sum(dl) / len(dl), "cer_full": 100 * jiwer.cer(refs, hyps), "cer_stream320": float("nan"),
                "nonblank": sum(len(tok.encode(h)) for h in hyps) / max(1, sum(len(tok.encode(r)) for r in refs)),
                "tanh_grad": float("nan"), "example": [refs[0], hyps[0]]}

    model.train()
    while True:
        for idx in batches(train, args.batch_seconds, rng):
            x, lens, texts, _ = collate(train, idx)
            targets, tl = ours.encode_targets(texts)
            loss = ref.loss(x, lens, targets, tl)
            (g,) = optimiser_step(loss, model, opt, sched, args.clip, list(model.parameters()))
            step += 1
            losses.append(float(loss.detach()))
            minutes = (time.time() - t0) / 60
            stop = step >= args.steps or (args.max_minutes and minutes >= args.max_minutes)
            if step % args.eval_every == 0 or stop or step == 1:
                rec = {"step": step, "minutes": round(minutes, 2), "train_loss": sum(losses) / len(losses),
                       "enc_grad": g, "lr": sched.get_last_lr()[0], **evaluate_ref()}
                losses = []
                log.write(json.dumps(rec, ensure_ascii=False) + "\n")
                log.flush()
                print(json.dumps(rec, ensure_ascii=False)[:300], file=sys.stderr)
            if stop:
                return 0


if __name__ == "__main__":
    sys.exit(main())
