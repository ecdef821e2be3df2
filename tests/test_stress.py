"""A large forget file: read in one streaming pass (validated and hashed line by line) with memory bounded
by the records kept, and ``--limit N`` auditing a seeded uniform sample of N records per text set."""

import hashlib
import json
import tracemalloc

import pytest

from unlearn_audit.benchmark import tiny
from unlearn_audit.cli import main
from unlearn_audit.data import Reservoir, load_texts
from unlearn_audit.errors import InputError
from unlearn_audit.models.loading import write_checkpoint

LINES = 100_000


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = tmp_path_factory.mktemp("stress") / "forget.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(LINES):
            fh.write(json.dumps({"text": f"record {i}: " + "a sentence of filler text " * 3}) + "\n")
    return path


def test_a_100k_line_file_is_sampled_in_one_pass_with_bounded_memory(big):
    size = big.stat().st_size  # about 10 MB
    tracemalloc.start()
    sample = load_texts(big, limit=100, seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Reading the whole file, decoding it and splitting it into lines would peak at several times its
    # size; streaming holds one line and the 100 kept records.
    assert peak < 2_000_000, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
    assert sample.records == LINES and len(sample.texts) == 100
    assert sample.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()  # hashed in the same pass
    numbers = [int(t.split(":")[0].split()[1]) for t in sample.texts]
    assert numbers == sorted(numbers) and len(set(numbers)) == 100  # file order, no repeats
    assert max(numbers) > LINES // 2  # not simply the first 100
    assert load_texts(big, limit=100, seed=0).texts == sample.texts  # reproducible
    assert load_texts(big, limit=100, seed=1).texts != sample.texts


def test_every_record_is_still_validated_when_sampling(big, tmp_path):
    bad = tmp_path / "bad.jsonl"
    with open(big, "rb") as src, open(bad, "wb") as dst:
        for i, line in enumerate(src):
            dst.write(b'{"text": 5}\n' if i == LINES - 7 else line)
    with pytest.raises(InputError, match=f"bad.jsonl:{LINES - 6}: field 'text' must be a string"):
        load_texts(bad, limit=10)


def test_the_reservoir_sample_is_uniform():
    counts = [0] * 10
    for seed in range(400):
        r = Reservoir(10, seed)
        for i in range(1000):
            r.add(i)
        for i in r.items():
            counts[i // 100] += 1
    assert all(320 <= c <= 480 for c in counts), counts  # 400 each expected, σ ≈ 19; the seeds are fixed
    whole = Reservoir(None, 0)
    for i in range(5):
        whole.add(i)
    assert whole.items() == [0, 1, 2, 3, 4]


def test_limit_audits_a_recorded_sample(tmp_path, capsys):
    tok = tiny.train_tokenizer(["a small corpus for a tokenizer, nothing more"] * 4, vocab_size=300)
    model = write_checkpoint(tiny.tiny_llama(len(tok), hidden=32, layers=1), tok, tmp_path / "model")
    forget, holdout = tmp_path / "forget.jsonl", tmp_path / "holdout.jsonl"
    forget.write_text("".join(json.dumps({"text": f"forget document number {i}"}) + "\n" for i in range(300)))
    holdout.write_text("".join(json.dumps({"text": f"holdout document number {i}"}) + "\n" for i in range(200)))
    out = tmp_path / "out"
    args = ["audit", model, "--forget", forget, "--holdout", holdout, "--schemes", "fp32", "--out", out, "--limit", "12"]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code in (0, 1, 4), capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["limit"]["records_per_text_set"] == 12
    assert "reservoir" in report["config"]["limit"]["sampling"]
    assert report["inputs"]["forget"]["n"] == 12 and report["inputs"]["forget"]["records_in_file"] == 300
    assert report["inputs"]["holdout"]["n"] == 12 and report["inputs"]["holdout"]["records_in_file"] == 200
    assert any("12 of 300 record(s)" in n for n in report["config"]["notes"])
    # Another limit is another sample: the resume cache must not hand back the first one's results.
    with pytest.raises(SystemExit):
        main([str(a) for a in args[:-1] + ["16"]])
    capsys.readouterr()
    again = json.loads((out / "report.json").read_text())
    assert again["run"]["resumed_variants"] == [] and again["inputs"]["forget"]["n"] == 16
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args[:-1] + ["0"]])
    assert exc.value.code == 2 and "--limit" in capsys.readouterr().err
