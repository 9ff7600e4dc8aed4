"""Time estimates per preset: measured on this server's finished jobs, kept across restarts,
reported in `welcome` and `status_report`."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_server_support import FakeEngine, ThreadedServer, job_request

from magic_protocol.client import MagicClient
from magic_server.engine.api import EngineDescription
from magic_server.serve import estimates as E

ITERATIONS = {"paper": 18000, "quality": 600, "draft": 240, "tiny": 40}


def test_a_measured_job_gives_its_preset_and_stands_in_for_the_others(tmp_path):
    path = tmp_path / "estimates.json"
    est = E.Estimates(ITERATIONS, "cpu x", path, probe_s_per_it=0.5)
    assert est.report()["paper"] == {"iterations": 18000, "seconds_per_iteration": 0.5,
                                     "fixed_seconds": 0.0, "seconds": 9000.0,
                                     "source": "start-up probe"}
    est.observe("draft", 240, 2, 96.0)  # 0.2 s per iteration and sample
    report = est.report()
    assert report["draft"]["seconds"] == pytest.approx(48.0)
    assert report["draft"]["source"] == "measured"
    assert report["paper"]["seconds"] == pytest.approx(3600.0)
    assert report["paper"]["source"] == "other preset"
    est.observe("draft", 100, 1, 40.0)  # 0.4: the running average moves half way
    assert est.report()["draft"]["seconds_per_iteration"] == pytest.approx(0.3)
    # nothing usable is ignored (a label map has no iterations, a cancelled job no time)
    est.observe("draft", 0, 1, 3.0)
    est.observe("draft", 10, 1, None)
    assert est.report()["draft"]["seconds_per_iteration"] == pytest.approx(0.3)
    # a restarted server on the same device and weights knows it; another device does not
    again = E.Estimates(ITERATIONS, "cpu x", path)
    assert again.report()["draft"]["seconds_per_iteration"] == pytest.approx(0.3)
    assert E.Estimates(ITERATIONS, "cuda:0 H200 x", path).report() == {}
    assert set(json.loads(path.read_text())) == {"cpu x"}


def test_a_broken_file_and_no_probe_give_no_figure(tmp_path):
    path = tmp_path / "estimates.json"
    path.write_text("not json")
    est = E.Estimates(ITERATIONS, "cpu", path)
    assert est.report() == {}
    est.observe("tiny", 40, 1, 4.0)
    assert est.report()["tiny"]["seconds"] == pytest.approx(4.0)


def test_the_probe_is_scaled_to_the_working_resolution():
    calls = []
    step = E.probe_seconds(lambda: calls.append(1))
    assert len(calls) == 3 and step is not None and step >= 0
    assert E.probe_rate(0.1, 128) == pytest.approx(0.1 * 4 * E.FORWARDS_PER_ITERATION)
    assert E.probe_rate(None, 224) is None

    def broken():
        raise RuntimeError("no device")

    assert E.probe_seconds(broken) is None


class TimedEngine(FakeEngine):
    def describe(self) -> EngineDescription:
        return dataclasses.replace(super().describe(), preset_iterations=dict(ITERATIONS))


def test_welcome_and_status_carry_the_estimates_of_finished_jobs():
    with ThreadedServer(TimedEngine(step_s=0.01, iterations=20)) as srv, \
            MagicClient(srv.address, timeout_s=10) as c:
        assert c.handshake().raw["estimates"] == {}  # nothing measured yet, no probe
        req, _ = job_request(preset="draft", samples=2, iterations=20)
        result = c.submit(req)
        welcome = c.handshake().raw["estimates"]
        status = c.status()["estimates"]
    assert welcome == status
    draft = welcome["draft"]
    assert draft["source"] == "measured" and draft["iterations"] == 240
    # the stand-in engine sleeps 10 ms per iteration (both samples at once)
    assert draft["seconds_per_iteration"] == pytest.approx(result.elapsed_s / 40, rel=0.3)
    assert 0.003 < draft["seconds_per_iteration"] < 0.05
    assert welcome["paper"]["source"] == "other preset"


def test_the_rate_is_timed_on_the_synthesis_so_a_short_job_does_not_inflate_a_long_one():
    """A 20-iteration job that spends 30 s learning the object and 2 s synthesizing: a
    100000-iteration job is then about 30 s + 100000 x 0.1 s, not 100000 x 1.6 s."""
    est = E.Estimates(ITERATIONS, "cpu")
    est.progress("j", "mask-net", 300, now=10.0)  # not synthesis: not timed
    for i in range(1, 21):
        est.progress("j", "synthesis" if i < 15 else "refine", i, now=30.0 + 0.1 * i)
    est.observe("draft", 20, 1, 32.0, job="j")
    draft = est.report()["draft"]
    assert draft["seconds_per_iteration"] == pytest.approx(0.1)
    assert draft["fixed_seconds"] == pytest.approx(30.0)
    assert draft["seconds"] == pytest.approx(30.0 + 0.1 * 240)
    assert est.timing == {}  # forgotten once the job ended
    est.progress("k", "synthesis", 1, now=0.0)
    est.forget("k")
    assert est.timing == {}
