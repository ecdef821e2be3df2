"""Signed attestations (attest/, cli/attest_cmds.py): ``audit --attest-key`` on the tiny memoriser, the
``attest`` and ``verify`` commands, and every envelope checked again with securesystemslib's DSSE
implementation and in-toto's Statement validator, which share no code with ours. A tampered report, a
swapped weight file, an edited statement and a wrong key must each fail; bad input is one line, exit 2.
Keys are made here with ``cryptography``; nothing touches the network."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from conftest import one_line_error, schema_errors
from unlearn_audit.data import sha256_file

pytest.importorskip("cryptography", reason="the attest extra (cryptography) is not installed")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402

ENVELOPE = "report.intoto.json"


def cli(args, capsys) -> tuple[int, str, str]:
    """The command line in-process: exit code, stdout, stderr."""
    from unlearn_audit.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def write_pair(private, where: Path, name: str) -> tuple[Path, Path]:
    """``private`` as PKCS#8 PEM and its public key as SubjectPublicKeyInfo PEM (as openssl writes them)."""
    key, pub = where / f"{name}.pem", where / f"{name}.pub.pem"
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, pub


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("keys")
    return {"ed25519": write_pair(ed25519.Ed25519PrivateKey.generate(), root, "ed25519"),
            "p256": write_pair(ec.generate_private_key(ec.SECP256R1()), root, "p256"),
            "p384": write_pair(ec.generate_private_key(ec.SECP384R1()), root, "p384"),
            "other": write_pair(ed25519.Ed25519PrivateKey.generate(), root, "other"),
            "rsa": write_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048), root, "rsa")}


def audit_args(bench, model, out, *extra):
    return ["audit", model, "--forget", bench["forget"], "--holdout", bench["holdout"], "--schemes", "fp32", "--out", out,
            "--format", "json", "--quiet", *extra]


@pytest.fixture(scope="module")
def signed(bench, keys, tmp_path_factory) -> dict:
    """One audit of a copy of the memoriser with ``--attest-key``: the model directory and the --out directory."""
    from unlearn_audit.cli import main

    root = tmp_path_factory.mktemp("signed")
    model, out = Path(shutil.copytree(bench["memoriser"], root / "model")), root / "out"
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in audit_args(bench, model, out, "--attest-key", keys["ed25519"][0])])
    return {"model": model, "out": out, "code": exc.value.code}


@pytest.fixture
def copy(signed, tmp_path) -> dict:
    """The signed audit's model and report set, copied for a test to change."""
    return {"model": Path(shutil.copytree(signed["model"], tmp_path / "model")), "out": Path(shutil.copytree(signed["out"], tmp_path / "out"))}


def statement_of(envelope: Path) -> dict:
    return json.loads(base64.b64decode(json.loads(envelope.read_text())["payload"]))


def test_audit_attest_key_signs_the_model_files_and_the_report_it_wrote(signed, keys, capsys):
    out, model = signed["out"], signed["model"]
    assert signed["code"] == 1  # the memoriser recites its forget set: FAIL, and the attestation says so
    report = json.loads((out / "report.json").read_text())
    statement = statement_of(out / ENVELOPE)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://unlearn-audit.dev/attestation/v1"
    recorded = {**report["inputs"]["model"]["files"], **report["inputs"]["model"]["side_files"]}
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == recorded
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= recorded.keys()
    for name, digest in recorded.items():  # the model's own files, by name, as they are on disk
        assert sha256_file(model / name) == digest
    predicate = statement["predicate"]
    assert predicate["report"] == {"name": "report.json", "sha256": sha256_file(out / "report.json"), "schema_version": report["schema_version"]}
    assert (predicate["verdict"], predicate["verdict_reason"]) == (report["verdict"], report["verdict_reason"]) == ("FAIL", report["verdict_reason"])
    assert predicate["policy"] == report["config"]["policy"] and predicate["policy_sha256"] == report["config"]["policy_sha256"]
    assert predicate["schemes"] == ["fp32"]
    assert predicate["data"]["forget"]["sha256"] == report["inputs"]["forget"]["sha256"] and "retain" not in predicate["data"]
    assert predicate["audit"]["versions"]["torch"] == report["run"]["versions"]["torch"]
    assert predicate["attested_with"]["cryptography"]

    code, stdout, err = cli(["verify", out / ENVELOPE, "--key", keys["ed25519"][1], "--model", model], capsys)
    assert (code, stdout) == (0, ""), err
    assert "verified signature, report, 5 model file(s): verdict FAIL" in err


@pytest.mark.parametrize("kind", ["ed25519", "p256", "p384"])
def test_attest_round_trip_checked_by_securesystemslib_and_in_toto(copy, keys, kind, capsys):
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    from unlearn_audit.attest import dsse
    from unlearn_audit.attest.keys import keyid

    out = copy["out"]
    (out / ENVELOPE).unlink()
    code, stdout, err = cli(["attest", out / "report.json", "--key", keys[kind][0]], capsys)
    assert code == 0, err
    assert f"wrote {out / ENVELOPE}" in err
    code, stdout, err = cli(["verify", out / ENVELOPE, "--key", keys[kind][1], "--model", copy["model"], "--report", out / "report.json"], capsys)
    assert (code, stdout) == (0, ""), err

    document = json.loads((out / ENVELOPE).read_text())
    public = serialization.load_pem_public_key(keys[kind][1].read_bytes())
    envelope = Envelope.from_dict(json.loads(json.dumps(document)))  # from_dict rewrites the dict it is given
    assert envelope.payload_type == "application/vnd.in-toto+json"
    assert envelope.pae() == dsse.pae(document["payloadType"], base64.b64decode(document["payload"]))
    accepted = envelope.verify([SSlibKey.from_crypto(public, keyid=keyid(public))], 1)
    assert list(accepted) == [keyid(public)]
    stranger = serialization.load_pem_public_key(keys["other"][1].read_bytes())
    with pytest.raises(VerificationError):
        envelope.verify([SSlibKey.from_crypto(stranger, keyid=keyid(public))], 1)

    in_toto = pytest.importorskip("in_toto_attestation.v1.statement", reason="in-toto-attestation is not installed")
    from google.protobuf import json_format

    statement = in_toto.Statement.copy_from_pb(json_format.Parse(envelope.payload, in_toto.spb.Statement()))
    statement.validate()  # in-toto's own checks: type, subjects with digests, predicate type and body
    assert len(statement.pb.subject) == 5


def test_a_tampered_report_fails(copy, keys, capsys):
    report = copy["out"] / "report.json"
    report.write_text(report.read_text().replace('"verdict": "FAIL"', '"verdict": "PASS"', 1))
    code, stdout, err = cli(["verify", copy["out"] / ENVELOPE, "--key", keys["ed25519"][1]], capsys)  # the report beside it, by default
    assert code == 1, err
    attested = statement_of(copy["out"] / ENVELOPE)["predicate"]["report"]["sha256"]
    assert stdout.splitlines() == [f"report: {report} has sha256 {sha256_file(report)}, attested {attested} (not the report that was attested)"]
    elsewhere = Path(shutil.copy(report, copy["out"].parent / "moved.json"))
    code, stdout, _ = cli(["verify", copy["out"] / ENVELOPE, "--key", keys["ed25519"][1], "--report", elsewhere], capsys)
    assert code == 1 and stdout.startswith(f"report: {elsewhere}")


def test_a_swapped_weight_file_and_an_added_tokenizer_file_fail(copy, bench, keys, capsys):
    model = copy["model"]
    shutil.copy(bench["clean"] / "model.safetensors", model / "model.safetensors")  # same shapes, other weights
    code, stdout, err = cli(["verify", copy["out"] / ENVELOPE, "--key", keys["ed25519"][1], "--model", model], capsys)
    assert code == 1, err
    assert stdout.splitlines() == [f"model: model.safetensors has sha256 {sha256_file(model / 'model.safetensors')}, "
                                   f"attested {_attested(copy, 'model.safetensors')}"]
    (model / "chat_template.jinja").write_text("{{ messages }}")  # read by the loader, so it changes the model
    (model / "notes.txt").write_text("read by nothing")  # not the model's: not a mismatch
    code, stdout, _ = cli(["verify", copy["out"] / ENVELOPE, "--key", keys["ed25519"][1], "--model", model], capsys)
    assert code == 1 and len(stdout.splitlines()) == 2
    assert stdout.splitlines()[1] == f"model: chat_template.jinja in {model} is read by the loader but not attested"
    (model / "tokenizer.json").unlink()
    code, stdout, _ = cli(["verify", copy["out"] / ENVELOPE, "--key", keys["ed25519"][1], "--model", model], capsys)
    assert code == 1 and f"model: tokenizer.json is attested but missing from {model}" in stdout.splitlines()


def _attested(copy, name: str) -> str:
    return next(s["digest"]["sha256"] for s in statement_of(copy["out"] / ENVELOPE)["subject"] if s["name"] == name)


def test_a_wrong_key_and_an_edited_statement_fail(copy, keys, capsys):
    envelope = copy["out"] / ENVELOPE
    code, stdout, err = cli(["verify", envelope, "--key", keys["other"][1], "--model", copy["model"]], capsys)
    assert code == 1, err
    assert len(stdout.splitlines()) == 1 and stdout.startswith(f"signature: no signature in {envelope} verifies with {keys['other'][1]}")
    # The statement itself rewritten (the verdict), the signature kept: the signature no longer holds.
    document = json.loads(envelope.read_text())
    statement = statement_of(envelope)
    statement["predicate"]["verdict"] = "PASS"
    document["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    envelope.write_text(json.dumps(document))
    code, stdout, _ = cli(["verify", envelope, "--key", keys["ed25519"][1], "--model", copy["model"]], capsys)
    assert code == 1 and stdout.startswith("signature: ")


def test_verify_a_hub_id_from_the_offline_cache(copy, bench, keys, tmp_path, monkeypatch, capsys):
    """--model takes a Hub id and --revision through the resolver every model argument uses (models/hub.py)."""
    from huggingface_hub import constants

    from test_hub import add_snapshot

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    add_snapshot(cache, "acme/clean", "a" * 40, bench["clean"])
    add_snapshot(cache, "acme/clean", "b" * 40, copy["model"])  # main now points at the attested files
    envelope = copy["out"] / ENVELOPE
    code, stdout, err = cli(["verify", envelope, "--key", keys["ed25519"][1], "--model", "acme/clean"], capsys)
    assert (code, stdout) == (0, ""), err
    code, stdout, _ = cli(["verify", envelope, "--key", keys["ed25519"][1], "--model", "acme/clean", "--revision", "a" * 40], capsys)
    assert code == 1 and stdout.startswith("model: model.safetensors has sha256")
    code, _, err = cli(["verify", envelope, "--key", keys["ed25519"][1], "--model", "acme/absent"], capsys)
    one_line_error(code, err, "acme/absent", "HF_HUB_OFFLINE")


def test_bad_input_is_one_line_and_exit_2(copy, keys, tmp_path, capsys):
    envelope, report = copy["out"] / ENVELOPE, copy["out"] / "report.json"
    pub, key = keys["ed25519"][1], keys["ed25519"][0]
    (tmp_path / "garbage.pem").write_text("hello")
    (tmp_path / "broken.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "other-type.json").write_text(json.dumps({**json.loads(envelope.read_text()), "payloadType": "text/plain"}))
    (tmp_path / "not-b64.json").write_text(json.dumps({**json.loads(envelope.read_text()), "payload": "!!"}))
    cases = [
        (["verify", tmp_path / "absent.json", "--key", pub], "not found"),
        (["verify", envelope, "--key", tmp_path / "absent.pem"], "not found"),
        (["verify", envelope, "--key", tmp_path / "garbage.pem"], "not a PEM file"),
        (["verify", envelope, "--key", tmp_path / "broken.pem"], "not a usable PEM public key"),
        (["verify", envelope, "--key", key], "a private key; verify with its public key"),
        (["verify", envelope, "--key", keys["rsa"][1]], "Ed25519 or ECDSA"),
        (["verify", report, "--key", pub], "not a DSSE envelope"),
        (["verify", tmp_path / "list.json", "--key", pub], "not a DSSE envelope"),
        (["verify", tmp_path / "other-type.json", "--key", pub], "payloadType 'text/plain'"),
        (["verify", tmp_path / "not-b64.json", "--key", pub], "payload is not valid base64"),
        (["verify", envelope, "--key", pub, "--report", tmp_path / "absent.json"], "report not found"),
        (["verify", envelope, "--key", pub, "--model", tmp_path / "no-model"], "not a directory"),
        (["attest", report, "--key", pub], "not a PEM private key"),
        (["attest", report, "--key", keys["rsa"][0]], "Ed25519 or ECDSA"),
        (["attest", envelope, "--key", key], "not an unlearn-audit report"),
        (["attest", tmp_path / "absent.json", "--key", key], "not found"),
    ]
    for args, needle in cases:
        code, stdout, err = cli(args, capsys)
        one_line_error(code, err, needle)
        assert stdout == ""
    assert not list(tmp_path.glob("*.intoto.json"))


def test_a_wrong_key_stops_the_audit_before_any_work(bench, keys, tmp_path, capsys):
    code, _, err = cli(audit_args(bench, bench["memoriser"], tmp_path / "out", "--attest-key", keys["rsa"][1]), capsys)
    one_line_error(code, err, "not a PEM private key")
    assert not (tmp_path / "out").exists()


def test_a_failed_write_leaves_the_previous_envelope_and_no_temporary_file(copy, keys, monkeypatch, capsys):
    out = copy["out"]
    before = (out / ENVELOPE).read_bytes()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    code, _, err = cli(["attest", out / "report.json", "--key", keys["p256"][0]], capsys)
    one_line_error(code, err, "cannot write the attestation", "No space left on device")
    assert (out / ENVELOPE).read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.is_file()) == []


def test_a_missing_cryptography_names_the_extra(copy, keys, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cryptography", None)  # as if it were not installed
    code, _, err = cli(["attest", copy["out"] / "report.json", "--key", keys["ed25519"][0]], capsys)
    one_line_error(code, err, "unlearn-audit[attest]")


def test_subject_names_that_leave_the_model_directory_are_never_opened(tmp_path):
    from unlearn_audit.attest.check import check_model

    secret = tmp_path / "secret"
    secret.write_text("x")
    (tmp_path / "model").mkdir()
    statement = {"subject": [{"name": "../secret", "digest": {"sha256": sha256_file(secret)}},
                             {"name": "adapter/../../secret", "digest": {"sha256": "0" * 64}}], "predicate": {}}
    found, _ = check_model(statement, tmp_path / "model")
    assert found[:2] == ["model: subject '../secret' is not a file name inside a model directory",
                         "model: subject 'adapter/../../secret' is not a file name inside a model directory"]


# --- audit --model-signature: an OpenSSF model-signing signature checked before the audit -----------------

@pytest.fixture
def publisher_signed(bench, keys, tmp_path) -> tuple[Path, Path]:
    """A copy of the memoriser signed with model-signing's key signer, as `model_signing sign key` does
    (the signature inside the directory, excluded from what it covers)."""
    pytest.importorskip("model_signing", reason="the model-signing extra is not installed")
    from model_signing import hashing, signing

    model = Path(shutil.copytree(bench["memoriser"], tmp_path / "published"))
    signing.Config().use_elliptic_key_signer(private_key=keys["p256"][0]).set_hashing_config(
        hashing.Config().set_ignored_paths(paths=["model.sig"])).sign(model, model / "model.sig")
    return model, model / "model.sig"


def test_a_model_signing_signature_is_verified_offline_and_recorded(publisher_signed, bench, keys, tmp_path, monkeypatch, capsys):
    model, signature = publisher_signed

    def no_network(*args, **kwargs):
        raise AssertionError("model-signing verification reached for the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    out = tmp_path / "out"
    code, _, err = cli(audit_args(bench, model, out, "--model-signature", signature, "--model-signature-key", keys["p256"][1],
                                  "--attest-key", keys["ed25519"][0]), capsys)
    assert code == 1, err
    report = json.loads((out / "report.json").read_text())
    record = report["inputs"]["model"]["signature"]
    assert record["verified"] is True and record["sha256"] == sha256_file(signature)
    assert record["public_key_sha256"] == sha256_file(keys["p256"][1]) and "model-signing" in record["method"]
    assert not schema_errors(report)
    assert statement_of(out / ENVELOPE)["predicate"]["model"]["signature"] == record


def test_a_model_signing_signature_that_does_not_hold_stops_the_audit(publisher_signed, bench, keys, tmp_path, capsys):
    model, signature = publisher_signed
    out = tmp_path / "out"
    code, _, err = cli(audit_args(bench, model, out, "--model-signature", signature, "--model-signature-key", keys["p384"][1]), capsys)
    one_line_error(code, err, "does not verify", str(keys["p384"][1]))
    (model / "tokenizer_config.json").write_text((model / "tokenizer_config.json").read_text() + " ")
    code, _, err = cli(audit_args(bench, model, out, "--model-signature", signature, "--model-signature-key", keys["p256"][1]), capsys)
    one_line_error(code, err, "does not verify", "tokenizer_config.json")
    code, _, err = cli(audit_args(bench, model, out, "--model-signature", signature), capsys)
    one_line_error(code, err, "needs --model-signature-key")
    code, _, err = cli(audit_args(bench, model, out, "--model-signature-key", keys["p256"][1]), capsys)
    one_line_error(code, err, "no --model-signature")
    assert not out.exists()


def test_attest_and_verify_without_a_model_import_neither_torch_nor_transformers(copy, keys, tmp_path):
    """Signing a report and checking a signature read JSON and keys only: no seconds spent importing torch."""
    from test_startup import run_fresh

    (copy["out"] / ENVELOPE).unlink()
    result, done = run_fresh(["attest", str(copy["out"] / "report.json"), "--key", str(keys["ed25519"][0])], tmp_path)
    assert result == {"code": 0, "heavy": []}, done.stderr
    result, done = run_fresh(["verify", str(copy["out"] / ENVELOPE), "--key", str(keys["ed25519"][1])], tmp_path)
    assert result["code"] in (0, None) and result["heavy"] == [], done.stderr


def test_a_merged_adapter_is_attested_under_adapter_and_checked_with_adapter(copy, keys, tmp_path):
    """``audit --adapter``: the audited model is the base with the adapter merged in, so the adapter's files
    are subjects too (``adapter/<file>``), checked against ``verify --adapter DIR``."""
    from unlearn_audit.attest.check import check_model
    from unlearn_audit.attest.statement import build_statement

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"lora weights")
    report = json.loads((copy["out"] / "report.json").read_text())
    report["inputs"]["adapter"] = {"path": str(adapter), "files": {n: sha256_file(adapter / n) for n in ("adapter_config.json", "adapter_model.safetensors")},
                                   "config": {}}
    statement = build_statement(report, "0" * 64, "report.json", "report.json")
    names = [s["name"] for s in statement["subject"]]
    assert "adapter/adapter_config.json" in names and "adapter/adapter_model.safetensors" in names and "model.safetensors" in names
    assert statement["predicate"]["model"]["adapter"] == {"path": str(adapter)}
    assert check_model(statement, copy["model"], adapter) == ([], [])
    found, notes = check_model(statement, copy["model"])
    assert found == [] and notes == ["the attested model has an adapter merged in (2 file(s)); give --adapter DIR to check them"]
    (adapter / "adapter_model.safetensors").write_bytes(b"other lora weights")
    found, _ = check_model(statement, copy["model"], adapter)
    assert found == [f"adapter: adapter/adapter_model.safetensors has sha256 {sha256_file(adapter / 'adapter_model.safetensors')}, "
                     f"attested {report['inputs']['adapter']['files']['adapter_model.safetensors']}"]
