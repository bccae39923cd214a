"""Report files, report collection across systems, and the CLI end to end."""

import csv
import json

from asr_adapt.cli.main import main
from asr_adapt.scoring import ScoreConfig, read_decode_jsonl, read_kaldi_dir, score
from asr_adapt.scoring.writers import collect_reports, write_comparison, write_report


def _data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "text").write_text("u1 Καλημέρα κόσμε\nu2 我爱北京\nu3 the cat sat\n", encoding="utf-8")
    (d / "utt2lang").write_text("u1 el-GR\nu2 zh-CN\nu3 en-US\n", encoding="utf-8")
    hyp = tmp_path / "dec" / "hyp.jsonl"
    hyp.parent.mkdir()
    hyp.write_text('{"utt_id": "u1", "text": "καλημέρα κόσμο", "lang": "el"}\n'
                   '{"utt_id": "u2", "text": "我爱上海"}\n{"utt_id": "u9", "text": "stray"}\n', encoding="utf-8")
    base = tmp_path / "base.txt"
    base.write_text("u1 καλημέρα\nu2 我爱北京\nu3 the cat\n", encoding="utf-8")
    return d, hyp, base


def test_readers(tmp_path):
    d, hyp, _ = _data(tmp_path)
    texts, langs = read_kaldi_dir(d)
    assert texts["u2"] == "我爱北京" and langs == {"u1": "el-GR", "u2": "zh-CN", "u3": "en-US"}
    texts, langs = read_decode_jsonl(hyp)
    assert texts["u9"] == "stray" and langs == {"u1": "el"}


def test_cli_score_end_to_end(tmp_path, capsys):
    d, hyp, base = _data(tmp_path)
    out = tmp_path / "out"
    rc = main(["score", str(d), str(hyp.parent), "--baseline", str(base), "-o", str(out),
               "--bootstrap", "100", "--name", "sysA"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "el-GR %WER 50.00 [ 1 / 2, 0 ins, 0 del, 1 sub ]" in captured.out
    assert "zh-CN %CER 50.00 [ 2 / 4, 0 ins, 0 del, 2 sub ]" in captured.out
    assert "en-US %WER 100.00 [ 3 / 3, 0 ins, 3 del, 0 sub ]" in captured.out  # missing hyp
    assert "| macro avg |" in captured.out and "| pooled |" in captured.out
    assert "u3" in captured.err and "u9" in captured.err
    for f in ["wer-summary-sysA.md", "wer-summary-sysA.json", "wer-summary-sysA.csv", "per_utt-sysA.txt",
              "errors-sysA.txt", "wer-sysA.png"]:
        assert (out / f).stat().st_size > 0, f
    summary = json.loads((out / "wer-summary-sysA.json").read_text(encoding="utf-8"))
    assert summary["normaliser"] == "multilingual" and summary["missing"] == ["u3"]
    assert summary["locales"]["zh-CN"]["metric"] == "cer"
    per_utt = (out / "per_utt-sysA.txt").read_text(encoding="utf-8")
    assert "(κόσμε->κόσμο)" in per_utt and "(北->上)" in per_utt and "(cat->*)" in per_utt
    errors = (out / "errors-sysA.txt").read_text(encoding="utf-8")
    assert "1   κόσμε -> κόσμο" in errors


def test_cli_errors(tmp_path, capsys):
    d, hyp, _ = _data(tmp_path)
    (d / "text").write_text("u1 ok\nbadutt   \n", encoding="utf-8")
    assert main(["score", str(d), str(hyp), "-o", str(tmp_path / "o"), "--bootstrap", "0"]) == 1
    assert "badutt" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "nope"), str(hyp), "--bootstrap", "0"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["score", str(d), str(hyp), "--normaliser", "klingon"]) == 2


def test_report_collects_two_systems(tmp_path, capsys):
    refs = {"a": "one two three four", "b": "我爱北京"}
    langs = {"a": "el-GR", "b": "zh-CN"}
    cfg = ScoreConfig(bootstrap=0)
    r1 = score(refs, {"a": "one two three four", "b": "我爱上海"}, langs, cfg, name="base")
    r2 = score(refs, {"a": "one two tree four", "b": "我爱北京"}, langs, cfg, name="lda")
    write_report(r1, tmp_path / "s1", plots=False)
    write_report(r2, tmp_path / "s2", plots=False)
    reports = collect_reports([tmp_path / "s1", tmp_path / "s2"])
    paths = write_comparison(reports, tmp_path / "cmp")
    rows = list(csv.reader(paths["csv"].open(encoding="utf-8")))
    assert rows[0] == ["row", "base", "lda"]
    assert rows[1] == ["el-GR", "0.0000", "25.0000"]
    assert rows[2] == ["zh-CN", "50.0000", "0.0000"]
    assert rows[3] == ["macro avg", "25.0000", "12.5000"]
    assert rows[4][0] == "pooled"
    assert paths["png"].stat().st_size > 0
    assert main(["report", str(tmp_path / "s1"), str(tmp_path / "s2"), "-o", str(tmp_path / "cli")]) == 0
    assert "| macro avg | 25.00 | 12.50 |" in capsys.readouterr().out
    # The same system twice is refused: its columns could not be told apart.
    assert main(["report", str(tmp_path / "s1"), str(tmp_path / "s1"), "-o", str(tmp_path / "x")]) == 1

    # Systems table: one row per system, macro over the chosen locales first, cost columns.
    s12 = [str(tmp_path / "s1"), str(tmp_path / "s2")]
    assert main(["report", *s12, "-o", str(tmp_path / "sys"), "--system-cost", "base=", "--macro-over", "zh-CN"]) == 0
    rows = list(csv.reader((tmp_path / "sys" / "systems.csv").open(encoding="utf-8")))
    assert rows[0] == ["system", "zh-CN", "macro avg", "el-GR", "trainable / locale", "training time"]
    assert rows[1] == ["base", "50.0000", "50.0000", "0.0000", "0", "0 s"]
    assert rows[2] == ["lda", "0.0000", "0.0000", "25.0000", "-", "-"]  # no cost given for it
    capsys.readouterr()
    assert main(["report", *s12, "-o", str(tmp_path / "x"), "--system-cost", "nosuch="]) == 1
    assert "no scored system is named 'nosuch'" in capsys.readouterr().err
    assert (tmp_path / "x" / "comparison.md").exists()  # a bad cost does not lose the comparison
    assert main(["report", *s12, "-o", str(tmp_path / "x"), "--macro-over", "el-GR, xx-YY"]) == 1
    assert "no system was scored on: xx-YY" in capsys.readouterr().err
    assert main(["report", *s12, "-o", str(tmp_path / "x"), "--system-cost", "lda"]) == 1
    assert "expected NAME=SOURCE" in capsys.readouterr().err
    assert main(["report", *s12, "-o", str(tmp_path / "x"), "--system-cost", f"lda={tmp_path}"]) == 1
    assert "neither an adapter bundle" in capsys.readouterr().err


def test_plot_wer_vs_latency(tmp_path):
    from asr_adapt.scoring.plots import plot_wer_vs_latency

    rows = [{"locale": "el-GR", "system": "lda", "chunk": "0.5s", "latency_ms": 900, "wer": 20.0},
            {"locale": "el-GR", "system": "lda", "chunk": "1.0s", "latency_ms": 1500, "wer": 15.0},
            {"locale": "sw-KE", "system": "lda", "latency_ms": 1200, "wer": 30.0}]
    out = plot_wer_vs_latency(rows, tmp_path / "p" / "lat.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
