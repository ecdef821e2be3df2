"""The verdict policy is a pure function of the results: checked on hand-made intervals."""

from unlearn_audit.policy import Policy, Variant, judge
from unlearn_audit.probes.base import Result


def variants(*names):
    return [Variant(n, 4, "built") for n in names]


def gap(variant, value, lo, hi, n=40):
    return Result(variant, "verbmem", "forget_minus_holdout", value, lo, hi, n)


def leak(variant, value, lo, hi, n=40):
    return Result(variant, "mink", "privleak", value, lo, hi, n)


def test_interval_against_tolerance():
    p = Policy()
    cases = {
        "PASS": gap("a", 0.01, -0.05, 0.07),  # whole CI under 0.10
        "FAIL": gap("a", 0.40, 0.30, 0.50),  # whole CI above 0.10
        "INCONCLUSIVE": gap("a", 0.08, 0.00, 0.16),  # straddles 0.10
    }
    for expected, r in cases.items():
        checks, verdict, _ = judge([r], variants("a"), p)
        assert checks[0].status == verdict == expected


def test_privleak_is_two_sided():
    p = Policy(privleak_abs_max=50)
    assert judge([leak("a", -95, -99, -90)], variants("a"), p)[1] == "FAIL"  # under-unlearning
    assert judge([leak("a", 90, 70, 99)], variants("a"), p)[1] == "FAIL"  # over-unlearning
    assert judge([leak("a", 5, -20, 30)], variants("a"), p)[1] == "PASS"


def test_too_few_documents_is_inconclusive():
    checks, verdict, reason = judge([gap("a", 0.0, -0.01, 0.01, n=5)], variants("a"), Policy())
    assert verdict == "INCONCLUSIVE" and "too few" in reason


def test_recovery_is_called_out_and_worst_variant_decides():
    results = [gap("fp32", 0.0, -0.05, 0.05), gap("rtn-int8", 0.0, -0.05, 0.05), gap("rtn-int4", 0.3, 0.2, 0.4)]
    checks, verdict, reason = judge(results, variants("fp32", "rtn-int8", "rtn-int4"), Policy())
    assert verdict == "FAIL"
    assert reason.startswith("passes at fp32, knowledge recovered under rtn-int4")


def test_failure_at_full_precision_is_not_called_recovery():
    results = [gap("fp32", 0.5, 0.4, 0.6), gap("rtn-int4", 0.5, 0.4, 0.6)]
    _, verdict, reason = judge(results, variants("fp32", "rtn-int4"), Policy())
    assert verdict == "FAIL" and reason.startswith("fails at fp32: verbmem")
    assert "recovered" not in reason


def test_full_precision_failure_and_recovery_are_both_named():
    results = [gap("fp32", 0.0, -0.05, 0.05), leak("fp32", 90, 70, 99), gap("rtn-int4", 0.4, 0.3, 0.5), leak("rtn-int4", 0, -20, 20)]
    _, verdict, reason = judge(results, variants("fp32", "rtn-int4"), Policy())
    assert verdict == "FAIL"
    assert reason.startswith("fails at fp32: privleak") and "over-unlearning" in reason
    assert "knowledge recovered under rtn-int4: rtn-int4 verbmem" in reason


def test_failure_without_fp32_in_the_schemes():
    _, verdict, reason = judge([gap("rtn-int4", 0.4, 0.3, 0.5)], variants("rtn-int4"), Policy())
    assert verdict == "FAIL" and reason.startswith("fails under rtn-int4: rtn-int4 verbmem")


def test_skipped_variant_is_typed_and_reported():
    vs = variants("fp32") + [Variant("bnb-fp4", 4, "skipped", "bitsandbytes missing")]
    checks, verdict, reason = judge([gap("fp32", 0.0, -0.05, 0.05)], vs, Policy())
    assert verdict == "PASS" and "bnb-fp4 skipped" in reason
    skipped = [c for c in checks if c.variant == "bnb-fp4"]
    assert skipped[0].status == "SKIPPED" and skipped[0].reason == "bitsandbytes missing"


def test_rejudging_with_a_stricter_policy_needs_no_model():
    r = [gap("a", 0.05, 0.02, 0.08)]
    assert judge(r, variants("a"), Policy())[1] == "PASS"
    assert judge(r, variants("a"), Policy(verbmem_gap_max=0.01))[1] == "FAIL"


def rec(variant, value, lo, hi, p, n=40):
    return Result(variant, "verbmem", "recovery_vs_fp32", value, lo, hi, n, p)


def test_recovery_needs_both_the_effect_and_significance():
    p = Policy(verbmem_recovery_max=0.10, recovery_alpha=0.05)
    vs = variants("fp32", "q")
    assert judge([rec("q", 0.30, 0.05, 0.5, 0.001)], vs, p)[0][0].status == "FAIL"  # big and significant
    assert judge([rec("q", 0.30, -0.2, 0.8, 0.20)], vs, p)[0][0].status == "INCONCLUSIVE"  # big, not significant
    assert judge([rec("q", 0.05, 0.04, 0.06, 0.001)], vs, p)[0][0].status == "PASS"  # significant but small
    assert not judge([rec("q", 0.3, 0.2, 0.4, 0.001)], vs, Policy(verbmem_recovery_max=None))[0]  # check turned off


def test_informational_schemes_never_decide_and_required_ones_must_run():
    results = [gap("fp32", 0.0, -0.05, 0.05), gap("rtn-int2", 0.4, 0.3, 0.5)]
    checks, verdict, _ = judge(results, variants("fp32", "rtn-int2"), Policy(informational_schemes=("rtn-int2",)))
    assert verdict == "PASS" and [c.required for c in checks] == [True, False] and checks[1].status == "FAIL"
    _, verdict, reason = judge(results[:1], variants("fp32"), Policy(required_schemes=("fp32", "rtn-int4")))
    assert verdict == "INCONCLUSIVE" and "rtn-int4" in reason


def test_policy_file_is_validated_and_hashed_by_content(tmp_path):
    import pytest

    from unlearn_audit.errors import InputError

    f = tmp_path / "p.toml"
    f.write_text("verbmem_gap_max = 0.2\nmin_documents = 20\ninformational_schemes = ['rtn-int2']\n")
    p = Policy.from_toml(f)
    assert p.verbmem_gap_max == 0.2 and p.min_documents == 20 and p.informational_schemes == ("rtn-int2",)
    g = tmp_path / "q.toml"
    g.write_text("# same values, other layout\ninformational_schemes=[\"rtn-int2\"]\nmin_documents=20\nverbmem_gap_max=0.20\n")
    assert Policy.from_toml(g).sha256() == p.sha256() != Policy().sha256()
    for text, needle in [("verbmem_gap=0.2\n", "did you mean 'verbmem_gap_max'"), ("min_documents = 0\n", "positive integer"),
                         ("privleak_abs_max = 'x'\n", "must be a number"), ("= broken", "invalid TOML")]:
        f.write_text(text)
        with pytest.raises(InputError, match=needle):
            Policy.from_toml(f)


def test_a_failed_recovery_check_is_named_as_recovery():
    """verbmem_recovery exists only for quantized variants, so it is recovery by definition."""
    results = [gap("fp32", 0.0, -0.05, 0.05), gap("rtn-int4", 0.0, -0.05, 0.05), rec("rtn-int4", 0.3, 0.2, 0.4, 0.001)]
    _, verdict, reason = judge(results, variants("fp32", "rtn-int4"), Policy())
    assert verdict == "FAIL" and reason.startswith("passes at fp32, knowledge recovered under rtn-int4: rtn-int4 verbmem_recovery")
