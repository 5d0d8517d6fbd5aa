"""The user's own network (``Implementation(network=...)``): ``network.jvp`` and
``network.times`` pass on correct networks (hand-written JVPs, fast time features, float32, every
declared time shape) and fail on wrong ones (a JVP returning primals, a placeholder zero or
negated derivative, a wrong hand-written backward under ``torch.autograd.functional.jvp``, a time
read as ``t[0]``, broadcast along the wrong axis, or ignored); they run from ``run_checks``.

Also the regression test of a false alarm on the Shortcut example (the check drew steps outside
its own restricted space).
"""

from __future__ import annotations

import importlib
import inspect
import math

import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from torch import nn

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.context import CheckContext, OracleSettings
from flowmap_oracle.oracle.implementation import ImplementationError, load_implementation
from flowmap_oracle.oracle.registry import CHECKS
from flowmap_oracle.oracle.runner import _space, plan_checks, run_check, run_checks
from flowmap_oracle.oracle.shipped import run_shipped_checks
from flowmap_oracle.oracle.user_network import (
    UserNetwork,
    check_network_jvp,
    check_network_times,
    run_network_checks,
)

F64 = Conventions.from_mapping({})
F32 = Conventions.from_mapping({"dtype": "float32"})


class TimeNet(nn.Module):
    """A small (x, t, s) network with sinusoidal time features; ``bug`` selects a wrong read."""

    def __init__(self, dim=2, freq=1.0, bug=None, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(dim + 4, 16, generator=g, dtype=torch.float64) / 2)
        self.v = nn.Parameter(torch.randn(16, dim, generator=g, dtype=torch.float64) / 4)
        self.freq, self.bug = freq, bug

    def features(self, x, t, s):
        n = x.shape[0]
        t = t.reshape(-1) if t.ndim else t.expand(n)
        s = s.reshape(-1) if s.ndim else s.expand(n)
        if self.bug == "t0":
            t = t[0].expand(n)  # bug: one time for the batch
        if self.bug == "ignore_s":
            s = torch.zeros_like(s)
        w = self.freq
        return torch.cat([x, torch.stack([(w * t).sin(), (w * t).cos(), s, t * s], 1)], 1)

    def forward(self, x, t, s):
        if self.bug == "column_axis" and t.ndim == 2:
            t = t.reshape(1, -1).expand(x.shape[0], -1).diagonal().flip(0)  # bug: wrong axis
        return torch.tanh(self.features(x, t, s) @ self.w) @ self.v


class _Scale(torch.autograd.Function):
    """``y = x * exp(t)`` with hand-written derivatives; ``mode`` plants a bug."""

    mode = "ok"

    @staticmethod
    def forward(x, t):
        return x * t.exp()[:, None]

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, t = inputs
        ctx.save_for_backward(x, t)
        ctx.save_for_forward(x, t)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        e = t.exp()[:, None]
        gt = (g * x * e).sum(1)
        return g * e, (-gt if _Scale.mode == "backward_sign" else gt)

    @staticmethod
    def jvp(ctx, dx, dt):
        x, t = ctx.saved_tensors
        e = t.exp()[:, None]
        if _Scale.mode == "primal":
            return x * e
        if _Scale.mode == "zero":
            return torch.zeros_like(x)
        return dx * e + x * e * dt[:, None]


class ScaleNet(nn.Module):
    def forward(self, x, t, s):
        return _Scale.apply(x, t) + s[:, None] * x


@pytest.fixture
def scale_mode():
    yield _Scale
    _Scale.mode = "ok"


def test_correct_networks_pass_both_checks():
    for conv, net in ((F64, TimeNet()), (F32, TimeNet().float())):
        user = UserNetwork(net, jvp_apis=("torch.func.jvp", "torch.autograd.functional.jvp"))
        assert check_network_jvp(conv, user).status == "pass"
        assert check_network_times(conv, user).status == "pass"


def test_a_float32_callable_that_cannot_be_cast_is_judged_in_float32(scale_mode):
    net = TimeNet(freq=30.0).float()
    apis = ("torch.func.jvp", "torch.autograd.functional.jvp", "torch.autograd.forward_ad")
    user = UserNetwork(lambda x, t, s: net(x, t, s), jvp_apis=apis)
    result = check_network_jvp(F32, user)
    assert result.status == "pass" and "float32" in result.message, result.message
    scale_mode.mode = "primal"
    wrong = UserNetwork(lambda x, t, s: ScaleNet()(x, t, s))
    assert check_network_jvp(F32, wrong).status == "fail"


def test_fast_time_features_are_no_false_alarm():
    # frequencies in the thousands (DiT-style embeddings of 1000 t): the difference quotient's
    # own error bar grows with them, the JVP is still right
    user = UserNetwork(TimeNet(freq=2000.0))
    result = check_network_jvp(F64, user)
    assert result.status in ("pass", "skip"), result.message


@pytest.mark.parametrize(
    ("mode", "api", "hint"),
    [
        ("primal", "torch.func.jvp", "disagrees"),
        ("zero", "torch.func.jvp", "disagrees"),
        ("zero", "torch.autograd.forward_ad", "disagrees"),
        ("backward_sign", "torch.autograd.functional.jvp", "disagrees"),
    ],
)
def test_a_wrong_hand_written_derivative_fails_network_jvp(scale_mode, mode, api, hint):
    user = UserNetwork(ScaleNet(), jvp_apis=(api,))
    assert check_network_jvp(F64, user).status == "pass"
    scale_mode.mode = mode
    result = check_network_jvp(F64, user)
    assert result.status == "fail", result.message
    assert hint in result.message and api in result.message
    assert "seed 0" in result.message and result.reproduce


def test_the_route_not_declared_is_not_judged(scale_mode):
    # a wrong forward-mode jvp is invisible to torch.autograd.functional.jvp (double backward)
    scale_mode.mode = "primal"
    user = UserNetwork(ScaleNet(), jvp_apis=("torch.autograd.functional.jvp",))
    assert check_network_jvp(F64, user).status == "pass"


@pytest.mark.parametrize(
    ("bug", "shapes", "says"),
    [
        ("t0", ("vector",), "not read per sample"),
        ("ignore_s", ("vector",), "does not change with its time argument 2"),
        ("column_axis", ("vector", "column"), "time shape 'column'"),
    ],
)
def test_a_time_read_wrongly_fails_network_times(bug, shapes, says):
    assert check_network_times(F64, UserNetwork(TimeNet(), time_shapes=shapes)).status == "pass"
    result = check_network_times(F64, UserNetwork(TimeNet(bug=bug), time_shapes=shapes))
    assert result.status == "fail" and says in result.message, result.message


def test_a_constant_network_is_not_judged_on_its_times():
    class Zero(nn.Module):
        def forward(self, x, t, s):
            return torch.zeros_like(x)

    assert check_network_times(F64, UserNetwork(Zero())).status == "skip"


def test_images_with_labels_and_a_shortcut_level():
    class Conditional(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(4, 12)

        def forward(self, x, t, k, y):
            t, k = t.reshape(-1).expand(x.shape[0]), k.reshape(-1).expand(x.shape[0])
            h = x.flatten(1) * (1 + t[:, None]) + 0.1 * k[:, None] + self.emb(y)
            return torch.tanh(h).reshape(x.shape)

    conv = Conventions.from_mapping(
        {"time": "noise_at_0", "signature": "shortcut_log2", "shortcut_levels": 4}
    )
    user = UserNetwork(
        Conditional(),
        data_shape=(3, 2, 2),
        make_extra=lambda x: (torch.randint(0, 4, (x.shape[0],)),),
        time_shapes=("vector", "column"),
    )
    for result in (check_network_jvp(conv, user), check_network_times(conv, user)):
        assert result.status == "pass", result.message


def test_the_network_step_runs_in_run_checks_and_its_errors_are_one_line():
    impl = Implementation("net only", network=TimeNet(bug="t0"))
    assert [s.label for s in plan_checks(impl)][-1] == "the user's network"
    results = run_checks(impl)
    by = {r.check: r for r in results}
    assert by["network.jvp"].status == "pass"
    assert by["network.times"].status == "fail" and by["network.times"].objective == "network"
    assert [r.check for r in run_checks(impl, objectives=["network"])] == [
        "network.times",
        "network.jvp",
    ]
    with pytest.raises(ImplementationError, match="network must be"):
        Implementation("x", network=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown 'torch\.jvp'"):
        UserNetwork(TimeNet(), jvp_apis=("torch.jvp",))
    with pytest.raises(ValueError, match="unknown network check"):
        run_network_checks(impl, only="network.grad")


# -- the examples -------------------------------------------------------------------------------

EXAMPLES = {
    # a hand-written jvp returning the primal embedding
    "examples.meanflow_custom_jvp": {"network.jvp"},
    # the network keeps the batch's first time; the sampler runs from t = 1 down to 0
    "examples.flow_matching_velocity_net": {"network.times", "sampler.euler.exact_map"},
}


def _run(module: str, factory: str):
    impl = getattr(importlib.import_module(module), factory)()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        shipped = run_shipped_checks(
            impl.conventions, losses=impl.shipped_losses, samplers=impl.samplers, repeats=16
        )
    return shipped + run_network_checks(impl)


@pytest.mark.parametrize("module", sorted(EXAMPLES))
def test_the_example_passes_and_its_wrong_variant_is_caught(module):
    right = _run(module, "implementation")
    assert not [r for r in right if r.status == "fail"], [
        (r.check, r.message) for r in right if r.status == "fail"
    ]
    assert {"network.jvp", "network.times"} <= {r.check for r in right if r.status == "pass"}
    wrong = _run(module, "wrong_implementation")
    assert {r.check for r in wrong if r.status == "fail"} == EXAMPLES[module]


@pytest.mark.parametrize("module", sorted(EXAMPLES))
def test_the_factory_hands_the_code_over_in_at_most_25_lines(module):
    source = inspect.getsource(importlib.import_module(module).implementation)
    assert len(source.rstrip().splitlines()) <= 25, source


# -- regression: Shortcut's finest level ---------------------------------------------------------


def test_shortcut_checks_never_draw_a_step_whose_half_step_is_the_velocity_level():
    """Under ``shortcut_log2`` the finest level L is the instantaneous velocity, so the Shortcut
    target of a 2^-(L-1) step has no expressible half step. The checks restrict their space to
    levels <= L - 2, but drew their hypothesis cases from the unrestricted space: the example
    failed ``shortcut.target.random_network`` at t - s = 2^-6 (seed 40858)."""
    impl = load_implementation("examples.torch_shortcut:implementation")
    levels = impl.conventions.shortcut_levels
    assert levels is not None
    ctx = CheckContext(impl, OracleSettings())
    forbidden = 2.0 ** -(levels - 1)
    names = [n for n, c in CHECKS.items() if c.objective == "shortcut" and c.draws]
    assert names
    for name in names:
        _never_draws(_space(CHECKS[name], ctx), forbidden)
    for name in ("shortcut.target.random_network", "shortcut.loss.value_and_gradient"):
        result = run_check(name, impl, OracleSettings(max_examples=30))
        assert result.status == "pass", result.message


def _never_draws(space, forbidden: float) -> None:
    @hsettings(max_examples=100, database=None, suppress_health_check=list(HealthCheck))
    @given(case=space.strategy())
    def drawn(case):
        t, s, _ = space.times(case, 8)
        assert not bool(torch.isclose(t - s, torch.tensor(forbidden, dtype=t.dtype)).any())

    drawn()


def test_the_restricted_space_still_catches_a_wrong_shortcut_target():
    import examples.torch_shortcut as ex

    def full_step(net, x, t, s):  # bug: the second half step starts from x moved by d, not d/2
        d = s - t
        k = ex._level(d)
        half = torch.clamp(k + 1, max=ex.LEVELS)
        with torch.no_grad():
            u1 = net(x, t, half)
            u2 = net(x + d[:, None] * u1, t + d / 2, half)
            v = net(x, t, torch.full_like(d, ex.LEVELS))
        return torch.where((d > 0)[:, None], 0.5 * (u1 + u2), v)

    from dataclasses import replace

    impl = replace(ex.implementation(), targets={"shortcut": full_step})
    result = run_check("shortcut.target.random_network", impl)
    assert result.status == "fail"
    assert math.isfinite(result.seconds)


# -- the pytest plugin ---------------------------------------------------------------------------

NETWORK_FACTORY = """
import torch
from flowmap_oracle import Implementation


def net(x, t, s):
    return x * (1 + t[:, None]) + (t - s)[:, None] ** 2


def first_time(x, t, s):
    return net(x, t[:1].expand(x.shape[0]), s)


def good():
    return Implementation("good network", network=net)


def bad():
    return Implementation("t[0] network", network=first_time)
"""


def test_the_pytest_plugin_runs_the_network_checks(pytester):
    pytester.makepyfile(mynet=NETWORK_FACTORY)
    pytester.syspathinsert()
    plugin = ("-p", "flowmap_oracle.oracle.plugin", "-p", "no:randomly", "-p", "no:cacheprovider")
    good = pytester.runpytest_inprocess(*plugin, "--impl=mynet:good", "-k", "network")
    assert good.parseoutcomes().get("passed") == 2, good.stdout.str()
    bad = pytester.runpytest_inprocess(*plugin, "--impl=mynet:bad", "-k", "network", "-rf")
    assert bad.ret == 1
    assert bad.parseoutcomes().get("failed") == 1
    assert "not read per sample" in bad.stdout.str()


def test_check_only_network_runs_the_network_checks(capsys):
    from flowmap_oracle.cli import main

    assert (
        main(["check", "examples.meanflow_custom_jvp:wrong_implementation", "--only", "network"])
        == 1
    )
    out = capsys.readouterr().out
    assert "network.jvp" in out and "network.times" in out
    assert "meanflow.shipped" not in out
