"""The metric math against hand-computed values (MUSE's definitions)."""


import numpy as np
import pytest

from unlearn_audit import stats
from unlearn_audit.probes import knowmem, mink
from unlearn_audit.probes.base import rouge_l_f1


def test_rouge_l_f1_on_known_strings():
    # LCS("the cat sat on the mat", "the cat on the mat") = 5 tokens: P = 5/5, R = 5/6, F1 = 10/11.
    assert rouge_l_f1("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)
    assert rouge_l_f1("Paris", "Paris") == 1.0
    assert rouge_l_f1("Paris", "London") == 0.0
    # No stemmer (MUSE): "running" and "runs" do not match.
    assert rouge_l_f1("running", "runs") == 0.0


def test_min_k_takes_the_lowest_fraction_of_tokens():
    lp = np.array([-1.0, -5.0, -2.0, -8.0, -0.5])
    assert mink.min_k(lp, 0.4) == pytest.approx(-6.5)  # floor(0.4*5) = 2 lowest: -8, -5
    assert mink.min_k(lp, 1.0) == pytest.approx(lp.mean())
    assert mink.min_k(lp, 0.05) == pytest.approx(-8.0)  # floor(0.25) = 0 -> at least one token


def test_auc_is_probability_holdout_beats_forget_with_half_ties():
    forget, holdout = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0])
    # pairs with holdout > forget: (2>1), tie (2=2) counts 1/2, (4>1,2,3) -> 4.5 of 6
    assert mink.auc(forget, holdout) == pytest.approx(0.75)
    # A memorising model makes forget texts more likely than every holdout text: AUC = 0.
    assert mink.auc(np.array([-1.0, -0.5]), np.array([-5.0, -4.0])) == 0.0


def test_privleak_sign_convention():
    assert mink.privleak(0.0, 0.5) == pytest.approx(-100.0)  # memorised: -100
    assert mink.privleak(0.5, 0.5) == 0.0
    assert mink.privleak(0.6, 0.5) == pytest.approx(20.0)  # over-unlearning is positive


def test_bootstrap_is_seeded_and_covers_the_estimate():
    x = np.arange(50, dtype=float)
    a = stats.mean(x, np.random.default_rng(1))
    b = stats.mean(x, np.random.default_rng(1))
    assert a == b
    assert a.value == pytest.approx(24.5)
    assert a.ci_low < a.value < a.ci_high
    # standard error of the mean is ~2.06 here, so a 95% interval is about ±4
    assert 2.5 < a.value - a.ci_low < 6


def test_difference_and_auc_intervals():
    rng = np.random.default_rng(0)
    d = stats.difference(np.ones(30), np.zeros(30), rng)
    assert (d.value, d.ci_low, d.ci_high) == (1.0, 1.0, 1.0)
    est, leak = stats.auc(np.zeros(20), np.ones(20), np.random.default_rng(0), ref=stats.Reference(fixed=0.5))
    assert est.value == 1.0 and leak.value == pytest.approx(100.0)
    # a reference model scored on the same documents: identical scores give PrivLeak exactly 0
    f, h = rng.normal(size=20), rng.normal(size=20)
    _, leak = stats.auc(f, h, np.random.default_rng(0), ref=stats.Reference(f, h))
    assert leak.value == 0.0 and leak.ci_low == 0.0 and leak.ci_high == 0.0


def test_knowmem_prompt_format_and_stop_strings():
    icl = [("Who?", "Ann"), ("Where?", "Rome")]
    prompt = knowmem.build_prompt("When?", icl)
    assert prompt == "Question: Who?\nAnswer: Ann\n\nQuestion: Where?\nAnswer: Rome\n\nQuestion: When?\nAnswer:"
    assert knowmem.build_prompt("When?", icl, muse_strict=True).endswith("Answer: ")
    assert knowmem.cut_at_stop(" 1902\n\nQuestion: x") == "1902"
    assert knowmem.cut_at_stop(" 1902\nQuestion: x") == "1902"
    assert knowmem.cut_at_stop(" 1902 Question: x") == "1902"


def test_min_k_plus_plus_loss_and_zlib_by_hand():
    import math
    import zlib as zl

    import numpy as np

    from unlearn_audit.models.base import TokenScores
    from unlearn_audit.probes import mink

    # a constructed next-token distribution over 4 words: p = (0.5, 0.25, 0.125, 0.125)
    p = np.array([0.5, 0.25, 0.125, 0.125])
    mu = float((p * np.log(p)).sum())
    sigma = math.sqrt(float((p * np.log(p) ** 2).sum()) - mu**2)
    observed = np.log(np.array([0.5, 0.125, 0.25, 0.125]))  # the four tokens the text really had
    t = TokenScores(logprobs=observed, mu=np.full(4, mu), sigma=np.full(4, sigma))
    z = sorted((lp - mu) / sigma for lp in observed)
    assert mink.min_k_plus_plus(t, 0.5) == pytest.approx((z[0] + z[1]) / 2)
    assert mink.min_k_plus_plus(t, 0.1) == pytest.approx(z[0])  # at least one token
    assert mink.loss(t) == pytest.approx(observed.mean())
    text = "the same words again and again and again"
    size = len(zl.compress(text.encode()))
    assert mink.zlib_ratio(t, size) == pytest.approx(observed.mean() / size)
    one_hot = TokenScores(logprobs=np.zeros(2), mu=np.zeros(2), sigma=np.zeros(2))
    assert mink.min_k_plus_plus(one_hot, 0.5) == 0.0
    names = [o.metric for o in mink.scores([t, t], "forget", [size, size])]
    assert {"min_k_40", "min_k_pp_40", "loss", "zlib"} <= set(names) and len(names) == len(set(names))
