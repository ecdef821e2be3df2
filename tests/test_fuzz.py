"""Property-based tests: whatever bytes a data set or a policy file holds, reading it either succeeds or
raises InputError (a one-line message naming the file), and through the CLI that is exit code 2 with
one line on stderr. Budgets are explicit (``max_examples``) so the file runs in about 15 s; the README's
"Reliability" section quotes them.
"""

import contextlib
import hashlib
import hmac
import io
import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from unlearn_audit.cli import main
from unlearn_audit.data import load_qa, load_texts
from unlearn_audit.errors import InputError
from unlearn_audit.policy import Policy

EXAMPLES = {"texts": 600, "qa": 400, "policy": 600, "cli": 150}  # examples run per target
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Lines a hostile or broken JSONL file may hold: real records, other JSON, text, raw bytes, and known
# traps (deep nesting, an integer too long to convert, an escaped lone surrogate, a U+2028 in a string).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
keys = st.sampled_from(["text", "question", "answer"]) | st.text(max_size=8)
records = st.dictionaries(keys, st.text(max_size=30) | json_values, max_size=4)
traps = st.sampled_from([
    "[" * 50_000, '{"text": ' + "[" * 5000 + "]" * 5000 + "}", '{"text": 1' + "0" * 5000 + "}", '{"text": "\\ud800"}',
    '{"text": "a\u2028b"}', '{"question": "q", "answer": "\\udfff"}', "\ufeff{}", "NaN", '{"text": "x", "text": 5}',
])
lines = st.one_of(
    st.tuples(records, st.booleans()).map(lambda r: json.dumps(r[0], ensure_ascii=r[1]).encode("utf-8")),
    json_values.map(lambda v: json.dumps(v).encode("utf-8")),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    traps.map(lambda t: t.encode("utf-8", "surrogatepass")),
)
jsonl_files = st.one_of(
    st.binary(max_size=400),
    st.tuples(st.lists(lines, max_size=6), st.sampled_from([b"\n", b"\r\n"]), st.booleans()).map(
        lambda t: (b"\xef\xbb\xbf" if t[2] else b"") + t[1].join(t[0])),
)

# Policy files: random bytes, and TOML documents built from the real keys (and a few wrong ones) with
# values of every TOML type, including integers no float can hold and nesting deeper than the stack.
policy_keys = st.sampled_from([f for f in Policy.__dataclass_fields__] + ["verbmem_gap", "", "a.b"])
toml_scalars = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["1" + "0" * 400, "1" + "0" * 5000, "inf", "-inf", "nan", "1e999", "0.0", "true", "false", "1979-05-27",
                     '"fp32"', "'x'", "{ a = 1 }", "[[[1]]]", "[" * 5000 + "]" * 5000, "[" * 5000, '"\\ud800"']),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=10).map(json.dumps),
)
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3).map(lambda v: "[" + ", ".join(v) + "]"))
toml_files = st.one_of(
    st.binary(max_size=300),
    st.lists(st.tuples(policy_keys, toml_values), max_size=5).map(
        lambda kv: "".join(f"{k} = {v}\n" for k, v in kv).encode("utf-8", "surrogatepass")),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _one_line(exc: InputError, path) -> None:
    message = str(exc)
    assert message.startswith(str(path)) and "\n" not in message and "\r" not in message, message


@settings(max_examples=EXAMPLES["texts"], **FAST)
@given(content=jsonl_files)
@example(content=b"")
@example(content=b'{"text": "a\xe2\x80\xa8b"}\n{"text": "c"}')
def test_text_sets_load_or_raise_input_error(scratch, content):
    path = scratch / "texts.jsonl"
    path.write_bytes(content)
    try:
        ts = load_texts(path)
    except InputError as exc:
        _one_line(exc, path)
        return
    # It loaded: the result must be exactly the file's records, line by line, hashed as they were read.
    expected = [json.loads(line)["text"] for line in content.decode("utf-8").split("\n") if line.strip()]
    assert list(ts.texts) == expected and all(t.strip() for t in ts.texts)
    assert ts.sha256 == hashlib.sha256(content).hexdigest()


@settings(max_examples=EXAMPLES["qa"], **FAST)
@given(content=jsonl_files)
def test_qa_sets_load_or_raise_input_error(scratch, content):
    path = scratch / "qa.jsonl"
    path.write_bytes(content)
    try:
        qa = load_qa(path)
    except InputError as exc:
        _one_line(exc, path)
        return
    assert all(isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip() for q, a in qa.pairs)


@settings(max_examples=EXAMPLES["policy"], **FAST)
@given(content=toml_files)
@example(content=b"verbmem_gap_max = 1" + b"0" * 400 + b"\n")
@example(content=b"a = " + b"[" * 5000 + b"\n")
def test_policy_files_parse_or_raise_input_error(scratch, content):
    path = scratch / "policy.toml"
    path.write_bytes(content)
    try:
        policy = Policy.from_toml(path)
    except InputError as exc:
        _one_line(exc, path)
        return
    for name, value in policy.to_dict().items():
        if isinstance(value, float):
            assert not math.isnan(value), name
    json.dumps(policy.to_dict())  # recordable in the report


@settings(max_examples=EXAMPLES["cli"], **FAST)
@given(content=jsonl_files | toml_files, flag=st.sampled_from(["--forget", "--policy"]))
def test_the_cli_answers_any_input_with_exit_2_and_one_line(scratch, content, flag):
    fuzzed = scratch / ("cli.toml" if flag == "--policy" else "cli.jsonl")
    fuzzed.write_bytes(content)
    good = scratch / "good.jsonl"
    good.write_text(json.dumps({"text": "a valid record"}) + "\n")
    missing_model = scratch / "no-model"  # reached only when the fuzzed file was valid
    args = ["audit", missing_model, "--forget", good, "--holdout", good, "--schemes", "fp32"]
    args = [*args, "--policy", fuzzed] if flag == "--policy" else [*args[:2], "--forget", fuzzed, *args[4:]]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    lines = stderr.getvalue().splitlines()
    assert exc.value.code == 2 and len(lines) == 1, stderr.getvalue()
    assert lines[0].startswith("unlearn-audit: error: ") and "Traceback" not in lines[0]
    assert str(fuzzed) in lines[0] or str(missing_model) in lines[0] or "also appear in the forget set" in lines[0], lines[0]


# The report loader, the MUSE directory reader and the resume cache's entry reader: the same contract on
# the other files the tool reads back. Their budgets add about 10 s.
MORE_EXAMPLES = {"report": 400, "muse": 300, "cache": 400}

REPORT_KEYS = ("schema_version", "verdict", "variants", "results", "checks", "config", "run")
report_docs = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(REPORT_KEYS) | st.text(max_size=8), json_values, max_size=8),
    st.fixed_dictionaries({k: json_values for k in REPORT_KEYS}),
)
report_files = st.one_of(
    st.binary(max_size=400),
    st.tuples(report_docs, st.booleans()).map(lambda t: json.dumps(t[0], ensure_ascii=t[1]).encode("utf-8", "surrogatepass")),
    st.tuples(st.fixed_dictionaries({k: json_values for k in REPORT_KEYS}), st.integers(0, 200)).map(
        lambda t: json.dumps(t[0]).encode()[: t[1]]),  # cut short, as by a full disk
    traps.map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@settings(max_examples=MORE_EXAMPLES["report"], **FAST)
@given(content=report_files)
@example(content=b"")
@example(content=json.dumps(dict.fromkeys(REPORT_KEYS, 1)).encode())
def test_a_report_loads_as_a_dict_or_raises_input_error(scratch, content):
    from unlearn_audit.report.load import load_report

    path = scratch / "report.json"
    path.write_bytes(content)
    try:
        report = load_report(path)
    except InputError as exc:
        _one_line(exc, path)
        return
    assert isinstance(report, dict) and all(k in report for k in REPORT_KEYS)


# A minimal MUSE directory (see muse_dir's docstring; test_muse_dir builds the full one from the benchmark):
# one file at a time is replaced by fuzzed bytes and put back after the example.
MUSE_FILES = {
    "raw/forget.txt": "The forget text, one long document.\n",
    "raw/holdout.txt": "The holdout text, another document.\n",
    "raw/retain1.txt": "Retain text.\n",
    "verbmem/forget.json": json.dumps([{"prompt": "The forget", "gt": " text"}]),
    "knowmem/forget_qa.json": json.dumps([{"question": "Q?", "answer": "A"}]),
    "knowmem/forget_qa_icl.json": json.dumps([{"question": "Q0?", "answer": "A0"}]),
    "knowmem/retain_qa.json": json.dumps([{"question": "R?", "answer": "B"}]),
    "knowmem/retain_qa_icl.json": json.dumps([{"question": "R0?", "answer": "B0"}]),
    "privleak/forget.json": json.dumps(["forget one", "forget two"]),
    "privleak/holdout.json": json.dumps(["holdout one", "holdout two"]),
}
muse_items = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(["prompt", "gt", "question", "answer"]) | st.text(max_size=6), st.text(max_size=12) | json_values,
                    max_size=3),
)
muse_contents = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.tuples(st.lists(muse_items, max_size=4) | json_values, st.booleans()).map(
        lambda t: json.dumps(t[0], ensure_ascii=t[1]).encode("utf-8", "surrogatepass")),
    traps.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b'["\\ud800"]', b'[{"prompt": "p", "gt": "\\udfff"}]', b"[]", b"{}", b" \n", b"\xef\xbb\xbf[]"]),
)


@pytest.fixture(scope="module")
def muse_root(scratch):
    root = scratch / "muse"
    for rel, text in MUSE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


@settings(max_examples=MORE_EXAMPLES["muse"], **FAST)
@given(rel=st.sampled_from(sorted(MUSE_FILES)), content=muse_contents)
@example(rel="privleak/holdout.json", content=b"[" * 50_000)
def test_a_muse_directory_reads_or_raises_input_error(muse_root, rel, content):
    from unlearn_audit.muse_dir import MuseCorpus, read_muse_dir

    (muse_root / rel).write_bytes(content)
    try:
        corpus = read_muse_dir(muse_root)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(str(muse_root)) and "\n" not in message and "\r" not in message, message
        return
    finally:
        (muse_root / rel).write_text(MUSE_FILES[rel], encoding="utf-8")
    assert isinstance(corpus, MuseCorpus)


# Resume-cache entries: anything an attacker or a crash can leave under --out/.cache, including entries
# that pass authentication (made with the same secret) but hold a malformed body.
SECRET, KEY = b"k" * 32, "0" * 32
probe_outs = st.lists(st.dictionaries(st.sampled_from(["probe", "split", "metric", "values", "generations"]),
                                      json_values | st.lists(st.floats() | st.none(), max_size=3), max_size=5), max_size=2)
cache_bodies = st.one_of(
    st.text(max_size=40),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"outs": probe_outs | json_values, "orig_outs": probe_outs | json_values, "forensics": json_values}).map(json.dumps),
)
cache_entries = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.tuples(cache_bodies | json_values, st.booleans(), st.text(max_size=64) | json_values).map(lambda t: _cache_entry(*t)),
)


def _cache_entry(content, authentic: bool, mac) -> bytes:
    if authentic and isinstance(content, str):
        try:
            mac = hmac.new(SECRET, KEY.encode() + b"\0" + content.encode(), hashlib.sha256).hexdigest()
        except UnicodeEncodeError:
            pass
    return json.dumps({"mac": mac, "content": content}).encode("utf-8", "surrogatepass")


@settings(max_examples=MORE_EXAMPLES["cache"], **FAST)
@given(content=cache_entries)
@example(content=_cache_entry(json.dumps({"outs": [{"probe": "p", "split": "s", "metric": "m", "values": [None, 1.0],
                                                     "generations": ["g"]}], "orig_outs": [], "forensics": None}), True, ""))
def test_a_resume_cache_entry_is_used_or_ignored_with_a_note(scratch, content):
    from unlearn_audit.pipeline.cache import VariantCache
    from unlearn_audit.pipeline.types import VariantRun

    root = scratch / "cache"
    root.mkdir(exist_ok=True)
    (root / f"{KEY}.json").write_bytes(content)
    cache = VariantCache(root, secret=SECRET)
    run = cache.get(KEY)
    assert run is None or isinstance(run, VariantRun)
    assert run is not None or len(cache.notes) == 1, cache.notes  # an ignored entry is always said


def test_a_cache_entry_whose_content_is_not_a_string_is_ignored(tmp_path):
    from unlearn_audit.pipeline.cache import VariantCache

    (tmp_path / f"{KEY}.json").write_text(json.dumps({"mac": "0" * 64, "content": 5}))
    cache = VariantCache(tmp_path, secret=SECRET)
    assert cache.get(KEY) is None and len(cache.notes) == 1
