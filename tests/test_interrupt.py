"""Ctrl-C and SIGTERM handling of `gristmill run` (pipelines/interrupt.py), in this process: both raise
KeyboardInterrupt, the exit code is 128 + the signal, a signal during the cleanup is ignored, one during
a shielded block (the Ray shutdown) waits for its end. Whole runs stopped by SIGTERM, with their
reruns, are in tests/reliability/test_sigterm.py."""

from __future__ import annotations

import os
import signal

import pytest

from curation import faults
from pipelines import interrupt, ray_session


@pytest.fixture(autouse=True)
def handlers():
    saved = {sig: signal.getsignal(sig) for sig in interrupt.SIGNALS}
    interrupt._reset_for_tests()
    yield
    interrupt._reset_for_tests()
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_sigterm_raises_keyboard_interrupt_and_exits_143():
    interrupt.install()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
    assert interrupt.received() == signal.SIGTERM
    assert (interrupt.exit_code(), interrupt.describe()) == (143, "interrupted (SIGTERM)")


def test_ctrl_c_keeps_130_and_its_message():
    interrupt.install()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert (interrupt.exit_code(), interrupt.describe()) == (130, "interrupted")
    interrupt._reset_for_tests()
    assert interrupt.exit_code() == 130, "a KeyboardInterrupt nobody signalled (Python's own handler) is Ctrl-C"


def test_a_second_signal_while_stopping_is_ignored_with_a_note(capfd):
    interrupt.install()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
    interrupt.stopping()
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    err = capfd.readouterr().err
    assert err.count("already stopping") == 1, err
    assert interrupt.exit_code() == 143, "the first signal decides the exit code"


def test_a_signal_inside_a_shielded_block_is_raised_when_it_ends():
    interrupt.install()
    finished = False
    with pytest.raises(KeyboardInterrupt):
        with interrupt.shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            finished = True
    assert finished, "the shielded block ran to its end"
    assert interrupt.received() == signal.SIGTERM


def test_before_the_cleanup_a_further_signal_raises_again():
    """A library that swallowed the first KeyboardInterrupt must not leave the run unstoppable."""
    interrupt.install()
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_while_ray_starts_is_an_interrupt(monkeypatch):
    """ray.init's own SIGTERM handler calls sys.exit(15); under `gristmill run` that becomes the interrupt."""
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER", False)  # _init sets it
    interrupt.install()
    shutdowns = []

    def init(**kwargs):
        raise SystemExit(signal.SIGTERM)

    monkeypatch.setattr(ray_session.ray, "init", init)
    monkeypatch.setattr(ray_session.ray, "shutdown", lambda: shutdowns.append(True))
    with pytest.raises(KeyboardInterrupt):
        ray_session._init(address="local")
    assert shutdowns and interrupt.received() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is interrupt._handler, "gristmill's handler is back"


def test_kill_points_can_send_sigterm():
    assert faults._parse("train.step:6:TERM") == ("train.step", 6, signal.SIGTERM)
    assert faults._parse("curate.stage_done:TERM") == ("curate.stage_done", 1, signal.SIGTERM)
    assert faults._parse("curate.stream_batch:2") == ("curate.stream_batch", 2, signal.SIGKILL)
