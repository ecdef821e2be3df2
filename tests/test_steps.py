"""The progress display: a stage that says how far it is gets a bar with the time left."""

import io

from rich.console import Console

from unlearn_audit.cli.common import PlainLog, Steps
from unlearn_audit.steps import Step


def _shown(feed) -> str:
    buf, clock = io.StringIO(), [0.0]
    console = Console(file=buf, force_terminal=True, width=160, color_system=None)
    with Steps(console, get_time=lambda: clock[0]) as steps:
        feed(steps, clock)
        steps.progress.refresh()
    return buf.getvalue()


def test_a_counted_stage_shows_done_of_total_and_the_time_left():
    def feed(steps, clock):
        steps("opening the checkpoints")
        for i in range(4):  # one step a second: 3 of 10 done after 3 s leaves 7 s
            clock[0] = float(i)
            steps(Step(f"unlearning: step {i}/10, loss 1.000", "unlearning", i, 10))

    shown = _shown(feed)
    assert "unlearning: step 3/10" in shown and "3/10" in shown
    assert "0:00:07" in shown, shown[-400:]


def test_a_new_stage_starts_its_own_clock_and_plain_text_is_never_markup():
    def feed(steps, clock):
        for i in range(3):
            clock[0] = float(i)
            steps(Step(f"a: {i}", "a", i, 4))
        clock[0] = 100.0
        steps(Step("variants: fp32 [bold]x[/bold]", "variants", 0, 2))
        clock[0] = 110.0
        steps(Step("variants: rtn-int4 [bold]x[/bold]", "variants", 1, 2))

    shown = _shown(feed)
    assert "[bold]x[/bold]" in shown  # a path or name is shown as given
    assert "0:00:10" in shown  # the second stage's elapsed time, not 110 s since the first began


def test_a_log_gets_plain_lines_and_quiet_gets_none(capsys):
    console = Console(file=io.StringIO(), force_terminal=False)
    with Steps(console) as steps:
        steps(Step("x", "x", 1, 2))
        steps("plain")
    assert steps.progress is None and console.file.getvalue() == ""  # no bar, no cursor codes
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "x (1/2 done" in lines[0] and lines[1].endswith("plain"), lines
    assert not any("\x1b" in line for line in lines)
    with Steps(console, quiet=True) as steps:
        steps(Step("x", "x", 1, 2))
        steps("plain")
    assert steps.progress is None and steps.plain is None and capsys.readouterr().err == ""


def _log(feed):
    lines, clock = [], [0.0]
    log = PlainLog(write=lines.append, get_time=lambda: clock[0])
    feed(log, clock)
    return lines


def test_a_log_says_each_variant_once_with_done_total_elapsed_and_time_left():
    def feed(log, clock):
        log("opening the checkpoints")
        for i, name in enumerate(("fp32", "rtn-int8", "rtn-int4", "bnb-fp4")):
            clock[0] = 10.0 + 60.0 * i  # a variant a minute, the stage starting at 10 s
            log(Step(f"{name}: building and probing", "variants", i, 4))
            log(Step(f"{name}: probing the original", "variants", i, 4))  # same variant: not said again

    lines = _log(feed)
    assert len(lines) == 5, lines
    assert lines[0] == "[0:00:00] opening the checkpoints"
    assert lines[1].startswith("[0:00:10] fp32: building and probing (0/4 done, stage 0:00:00, left unknown)")
    # 3 variants in 180 s: one more takes 60 s
    assert lines[4] == "[0:03:10] bnb-fp4: building and probing (3/4 done, stage 0:03:00, left 0:01:00)"


def test_a_long_stage_prints_every_tenth_and_when_quiet_for_long():
    def feed(log, clock):
        for i in range(1, 201):  # 200 training steps, 0.1 s each, then one slow step
            clock[0] = i * 0.1
            log(Step(f"unlearning: step {i}/200", "unlearning", i, 200))

    lines = _log(feed)
    # the first step, then each tenth (20, 40, ..., 200): 11 lines, not 200
    assert len(lines) == 11 and lines[-1].startswith("[0:00:20] unlearning: step 200/200 (200/200 done"), lines

    # the first line comes after step 1 has run: its rate is not known yet, and later lines time from it
    assert lines[0].endswith("(1/200 done, stage 0:00:00, left unknown)") and lines[1].endswith("(20/200 done, stage 0:00:01, left 0:00:18)")

    def slow(log, clock):
        for i in range(1, 10):  # 9 steps of 40 s in a 1000-step stage: no tenth is crossed, but 30 s pass each time
            clock[0] = i * 40.0
            log(Step(f"s {i}", "s", i, 1000))

    assert len(_log(slow)) == 9


def test_a_line_held_back_is_dropped_on_failure_and_printed_after_its_grace():
    import time

    lines = []
    log = PlainLog(write=lines.append, grace=0.3)
    log("opening the checkpoints")
    log.close(failed=True)  # bad input found within the grace: the error stays the only line
    assert lines == []
    log = PlainLog(write=lines.append, grace=0.3)
    log("scoring the reference model")
    time.sleep(0.6)  # a long stage is announced once its grace is over, without waiting for the next line
    assert len(lines) == 1 and lines[0].endswith("scoring the reference model")
    log("next stage")
    log("and another")  # the next line prints the one held back at once
    assert len(lines) == 2 and lines[1].endswith("next stage")
    log.close(failed=False)
    assert len(lines) == 3
