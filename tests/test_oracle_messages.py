"""Failure messages: a short first line with the key fact, and the likely cause when one is
recognisable (float32 arithmetic, a constant factor, a sign flip, swapped components, reordered
samples, a transposed output, an alternative reference), with no hint for a plain wrong value."""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.oracle import Implementation, run_check
from flowmap_oracle.oracle.results import CheckFailure, compare, likely_cause
from flowmap_oracle.oracle.tolerances import GRADIENT, STANDARD

F64 = STANDARD["float64"]
F32 = STANDARD["float32"]


def _reference(seed: int = 0, shape=(16, 2)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def test_float32_arithmetic_against_a_float64_tolerance():
    e = _reference()
    hint = likely_cause(e, e.float().double(), F64)
    assert hint is not None and hint.startswith("looks like float32 arithmetic")
    assert "values are float32 numbers" in hint
    # A float32 intermediate mixed into float64 arithmetic: no longer float32 numbers.
    mixed = e + (e.float().double() - e) * 1.5
    assert likely_cause(e, mixed, F64).startswith("looks like float32 arithmetic (relative")
    # Under a float32 tolerance float32 rounding is not a mistake (and would pass anyway).
    assert likely_cause(e, e.float().double(), F32) is None


@pytest.mark.parametrize(
    ("factor", "expected"),
    [
        (2.0, "off by a factor 2.000 (a missing 1/2 or a sum vs mean?)"),
        (0.5, "off by a factor 0.500 (a missing 1/2 or a sum vs mean?)"),
        (16.0, "off by a factor 16.000 (16: a sum vs mean, or a missing constant?)"),
        (3.7, "off by a factor 3.700 (a missing weight or normalisation?)"),
        (-1.0, "exactly negated: a sign or time-direction flip?"),
    ],
)
def test_a_constant_factor_is_named(factor, expected):
    e = _reference()
    assert likely_cause(e, factor * e, F64) == expected
    # also in float32, where got carries float32 noise
    assert likely_cause(e, (factor * e).float().double(), F32) == expected


def test_a_scalar_gets_a_factor_hint_only_for_a_simple_factor():
    one = torch.tensor(1.2345, dtype=torch.float64)
    assert "factor 2.000" in likely_cause(one, 2 * one, F64)
    assert likely_cause(one, 1.7 * one, F64) is None  # one number is a multiple of any other


def test_swapped_components_transposed_and_reordered_samples():
    e = _reference()
    assert likely_cause(e, e[:, [1, 0]], F64) == (
        "components 0 and 1 swapped: a transposed or reordered output?"
    )
    three = _reference(shape=(16, 3))
    assert "components permuted" in likely_cause(three, three[:, [1, 2, 0]], F64)
    assert likely_cause(e, e.T, F64) == "transposed?"  # shapes differ
    square = _reference(shape=(4, 4))
    assert likely_cause(square, square.T, F64) == "transposed?"
    hint = likely_cause(e, e.roll(1, dims=0), F64)
    assert hint == (
        "samples reordered: row 0 holds the reference's row 15 (a shuffled or permuted batch axis?)"
    )


def test_an_alternative_reference_the_check_supplies_is_named():
    e = _reference()
    at_one_minus_t = _reference(seed=1)
    hint = likely_cause(
        e, at_one_minus_t, F64, alternatives={"the reference at 1 - t": at_one_minus_t}
    )
    assert hint == "matches the reference at 1 - t"


def test_a_plain_wrong_value_gets_no_hint():
    e = _reference()
    for seed in range(1, 6):
        assert likely_cause(e, _reference(seed=seed), F64) is None
        assert likely_cause(e, _reference(seed=seed), F32) is None
    assert likely_cause(e, e + 0.3, F64) is None  # an offset is not a factor
    # A near miss under a loose tolerance (a 1% scale plus noise) is no "factor 1.01".
    g = torch.Generator().manual_seed(9)
    near = 1.009 * e + 5e-3 * torch.randn(e.shape, generator=g, dtype=torch.float64)
    assert likely_cause(e, near, GRADIENT["float32"]) is None


def test_compare_puts_the_cause_and_the_size_on_a_short_first_line():
    e = _reference()
    with pytest.raises(CheckFailure) as info:
        compare(
            e, 2 * e, F64, quantity="MeanFlow target F_tgt (our convention) on a random network"
        )
    first, *rest = info.value.message.splitlines()
    assert first.startswith("off by a factor 2.000 (a missing 1/2 or a sum vs mean?)")
    assert len(first) <= 100
    assert "MeanFlow target F_tgt (our convention) on a random network differs" in rest[0]
    assert info.value.mismatch.hint.startswith("off by a factor 2.000")
    assert info.value.mismatch.to_json()["hint"] == info.value.mismatch.hint
    with pytest.raises(CheckFailure) as info:
        compare(e, _reference(seed=3), F64, quantity="x")
    assert info.value.message.splitlines()[0].startswith("differs from the reference: largest")
    assert info.value.mismatch.hint is None


def test_rows_are_printed_with_enough_digits_to_differ():
    e = _reference()
    with pytest.raises(CheckFailure) as info:
        compare(e, e.float().double(), F64, quantity="x")
    (row,) = [line for line in info.value.message.splitlines() if line.startswith("  sample")]
    expected, got = row.split(": expected ")[1].split(", got ")
    assert expected != got


def test_a_reference_that_is_not_finite_is_an_error_of_the_oracle():
    e = _reference()
    e[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="not finite"):
        compare(e, e.nan_to_num(), F64, quantity="x")


def test_non_finite_output_counts_as_outside_the_tolerance():
    e = _reference()
    g = e.clone()
    g[2, 1] = float("nan")
    with pytest.raises(CheckFailure) as info:
        compare(e, g, F64, quantity="x")
    assert info.value.mismatch.index == (2, 1) and info.value.mismatch.n_bad == 1


# -- through the oracle: what a user sees --------------------------------------------------------


def _target(net, x, t, s, v):
    _, dF = torch.func.jvp(net, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
    return (v - (t - s)[:, None] * dF).detach()


def _first_line(fn) -> str:
    result = run_check(
        "meanflow.target.random_network", Implementation("x", targets={"meanflow": fn})
    )
    assert result.status == "fail"
    return result.message.splitlines()[0]


def test_oracle_failures_name_the_cause_within_the_first_90_characters():
    def in_float32(net, x, t, s, v):  # declared float64, computed in float32
        return _target(net, x, t, s, v).float().double()

    def doubled(net, x, t, s, v):
        return 2 * _target(net, x, t, s, v)

    def negated(net, x, t, s, v):
        return -_target(net, x, t, s, v)

    def transposed(net, x, t, s, v):
        return _target(net, x, t, s, v).T

    assert _first_line(in_float32)[:90].startswith("looks like float32 arithmetic")
    assert _first_line(doubled)[:90].startswith("off by a factor 2.000")
    assert _first_line(negated)[:90].startswith("exactly negated")
    line = _first_line(transposed)
    assert (
        line == "bad value: the meanflow target: expected shape (16, 2), got (2, 16) (transposed?)"
    )
