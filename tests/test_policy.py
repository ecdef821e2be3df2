"""The verdict policy is a pure function of the results: checked on hand-made intervals."""

from unlearn_audit.policy import Policy, Result, judge

BUILT = {"status": "built", "reason": ""}


def variants(*names):
    return [{"name": n, "scheme": n, "bits": 4, **BUILT} for n in names]


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
    vs = variants("fp32") + [{"name": "bnb-fp4", "scheme": "bnb-fp4", "bits": 4, "status": "skipped", "reason": "bitsandbytes missing"}]
    checks, verdict, reason = judge([gap("fp32", 0.0, -0.05, 0.05)], vs, Policy())
    assert verdict == "PASS" and "bnb-fp4 skipped" in reason
    skipped = [c for c in checks if c.variant == "bnb-fp4"]
    assert skipped[0].status == "SKIPPED" and skipped[0].reason == "bitsandbytes missing"


def test_rejudging_with_a_stricter_policy_needs_no_model():
    r = [gap("a", 0.05, 0.02, 0.08)]
    assert judge(r, variants("a"), Policy())[1] == "PASS"
    assert judge(r, variants("a"), Policy(verbmem_gap_max=0.01))[1] == "FAIL"
