"""The progress display: a stage that says how far it is gets a bar with the time left."""

import io

from rich.console import Console

from unlearn_audit.cli.common import Steps
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


def test_no_terminal_no_display():
    console = Console(file=io.StringIO(), force_terminal=False)
    with Steps(console) as steps:
        steps(Step("x", "x", 1, 2))
        steps("plain")
    assert steps.progress is None and console.file.getvalue() == ""
