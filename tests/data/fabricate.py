"""Fabricate tiny Common Voice and FLEURS releases (real file layouts, synthetic audio).

The releases carry the defects real downloads have: a zero-byte clip, a clip named in a
tsv but absent, a corrupt clip, extra and reordered tsv columns, quotes in transcripts,
rows sharing an audio file. Tests assert literal counts, so the contents below are
fixed; each helper's docstring lists what it makes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    """A sine with a little noise: decodable audio of a known length."""
    t = np.arange(int(seconds * SR)) / SR
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _write_tsv(path: Path, header: list[str] | None, rows: list[dict] | list[list[str]]) -> None:
    lines = []
    if header is not None:
        lines.append("\t".join(header))
        lines += ["\t".join(str(r.get(c, "")) for c in header) for r in rows]
    else:
        lines += ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# Common Voice: (clip, client, sentence, split); split "validated" = only in validated.tsv.
CV_EL = [
    ("common_voice_el_1.mp3", "aaa1", "Καλημέρα σας.", "train"),
    ("common_voice_el_2.mp3", "aaa1", "Τι ώρα είναι;", "train"),
    ("common_voice_el_3.mp3", "bbb2", "Ο καιρός είναι καλός.", "train"),
    ("common_voice_el_4.mp3", "bbb2", "Ένα μηδενικό αρχείο.", "train"),  # zero bytes
    ("common_voice_el_5.mp3", "ccc3", "Πού είναι ο σταθμός;", "dev"),
    ("common_voice_el_6.mp3", "ddd4", "Ευχαριστώ πολύ.", "test"),
    ("common_voice_el_7.mp3", "aaa1", "Μη επισημασμένο ένα.", "validated"),
    ("common_voice_el_8.mp3", "eee5", "Μη επισημασμένο δύο.", "validated"),
]
CV_PT = [
    ("common_voice_pt_1.mp3", "ppp1", "Bom dia a todos.", "train"),
    ("common_voice_pt_2.mp3", "qqq2", '"Olá", disse ele.', "train"),
    ("common_voice_pt_3.mp3", "rrr3", "Onde fica a estação?", "dev"),
    ("common_voice_pt_4.mp3", "sss4", "Muito obrigado.", "test"),
    ("common_voice_pt_5.mp3", "ttt5", "Este arquivo não existe.", "test"),  # never written
    ("common_voice_pt_6.mp3", "ppp1", "Sem rótulo.", "validated"),
]
CV_EMPTY = {"common_voice_el_4.mp3"}
CV_MISSING = {"common_voice_pt_5.mp3"}
# el: the current release's column order; pt-BR: reordered, with unknown extra columns.
CV_EL_HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes",
                "age", "gender", "accents", "variant", "locale", "segment"]
CV_PT_HEADER = ["sentence", "age", "path", "locale", "client_id", "mystery_column"]


def make_commonvoice(root: Path) -> Path:
    """``root/{el,pt-BR}/clips/*.mp3`` + train/dev/test/validated tsvs.

    el: train 4 rows (one zero-byte clip), dev 1, test 1, 2 validated-only rows.
    pt-BR: train 2, dev 1, test 2 (one clip missing), 1 validated-only row.
    Client ids are short stand-ins for CV's 128-hex ids.
    """
    for folder, rows, header, locale in (("el", CV_EL, CV_EL_HEADER, "el"), ("pt-BR", CV_PT, CV_PT_HEADER, "pt-BR")):
        d = root / folder
        (d / "clips").mkdir(parents=True, exist_ok=True)
        for i, (clip, *_) in enumerate(rows):
            path = d / "clips" / clip
            if clip in CV_EMPTY:
                path.write_bytes(b"")
            elif clip not in CV_MISSING:
                sf.write(path, tone(0.6 + 0.1 * i, 220 + 40 * i, i), SR, format="MP3")
        records = {split: [] for split in ("train", "dev", "test", "validated")}
        for n, (clip, client, sentence, split) in enumerate(rows):
            rec = {"client_id": client, "path": clip, "sentence": sentence, "sentence_id": f"s{n}",
                   "locale": locale, "up_votes": 2, "down_votes": 0, "mystery_column": "extra"}
            if split != "validated":
                records[split].append(rec)
            records["validated"].append(rec)
        for split, recs in records.items():
            _write_tsv(d / f"{split}.tsv", header, recs)
        (d / "other.tsv").write_text("\t".join(header) + "\n", encoding="utf-8")  # ignored by the preparer
    return root


# FLEURS: (id, file, raw, normalized, split); corrupt files hold bytes that are not audio.
FLEURS = {
    "el_gr": [
        (1, "100.wav", "Καλημέρα, κόσμε!", "καλημέρα κόσμε", "train"),
        (1, "101.wav", "Καλημέρα, κόσμε!", "καλημέρα κόσμε", "train"),
        (2, "102.wav", 'Είπε "ναι".', "είπε ναι", "train"),
        (3, "102.wav", "Ίδιο αρχείο, άλλη πρόταση.", "ίδιο αρχείο άλλη πρόταση", "train"),
        (4, "200.wav", "Ο σταθμός.", "ο σταθμός", "dev"),
        (5, "300.wav", "Ευχαριστώ.", "ευχαριστώ", "test"),
        (6, "301.wav", "Χαλασμένο.", "χαλασμένο", "test"),  # corrupt
    ],
    "cmn_hans_cn": [
        (7, "400.wav", "你好，世界。", "你好 世界", "train"),
        (8, "500.wav", "车站在哪里？", "车站在哪里", "dev"),
        (9, "600.wav", "谢谢。", "谢谢", "test"),
    ],
}
FLEURS_CORRUPT = {"301.wav"}


def make_fleurs(root: Path) -> Path:
    """``root/{el_gr,cmn_hans_cn}/audio/<split>/*.wav`` + headerless ``<split>.tsv``.

    el_gr: train 4 rows (sentence 1 read twice; rows 2 and 3 share ``102.wav``), dev 1,
    test 2 (``301.wav`` corrupt). cmn_hans_cn: one row per split.
    """
    for code, rows in FLEURS.items():
        d = root / code
        by_split: dict[str, list[list]] = {}
        for i, (sid, name, raw, norm, split) in enumerate(rows):
            audio = d / "audio" / split / name
            audio.parent.mkdir(parents=True, exist_ok=True)
            if name in FLEURS_CORRUPT:
                audio.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(64))
            elif not audio.exists():
                sf.write(audio, tone(0.5 + 0.1 * i, 300 + 25 * i, 100 + i), SR, subtype="PCM_16")
            chars = " ".join(c if c != " " else "|" for c in norm)
            by_split.setdefault(split, []).append([sid, name, raw, norm, chars, 8000 + i, "FEMALE"])
        for split, recs in by_split.items():
            _write_tsv(d / f"{split}.tsv", None, recs)
    return root
