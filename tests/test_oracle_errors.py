"""The implementation's exceptions keep their own frames (console, JSON, reproduce); a network
called with the wrong arguments says so in the user's terms; a bad spec or a convention that
cannot run is refused at load time with one line."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from flowmap_oracle.oracle import (
    CheckFailure,
    Implementation,
    ImplementationError,
    load_implementation,
    reproduce,
    run_check,
)

USER_CODE = """
import torch
from flowmap_oracle.oracle import Implementation


def _helper(x):
    raise RuntimeError("shape mismatch in my code")


def raising_target(net, x, t, s, v):
    y = net(x, t, s)
    return _helper(y)


def two_argument_call(net, x, t, s, v):
    return net(x, t)


def keyword_call(net, x, t, s, v):
    return net(x, t=t, s=s)


def raising():
    return Implementation("raising", targets={"meanflow": raising_target})


def arity():
    return Implementation("arity", targets={"meanflow": two_argument_call})


def keywords():
    return Implementation("keywords", targets={"meanflow": keyword_call})
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's, in a real file (``usercode_<test>.py``) on ``sys.path``."""

    def make(name: str, source: str = USER_CODE) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.invalidate_caches()
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return make


def _line_of(path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_a_raising_target_names_its_own_file_and_line(user_module, tmp_path):
    mod = user_module("usercode_raising")
    result = run_check("meanflow.target.random_network", load_implementation(f"{mod}:raising"))
    assert result.status == "fail"
    first = result.message.splitlines()[0]
    assert first == (
        "the implementation's meanflow target raised RuntimeError: shape mismatch in my code"
    )
    src = tmp_path / f"{mod}.py"
    raise_line = _line_of(src, 'raise RuntimeError("shape mismatch')
    call_line = _line_of(src, "return _helper(y)")
    assert result.traceback is not None and len(result.traceback) == 2
    assert result.traceback[-1].endswith(f"{mod}.py:{raise_line} in _helper")
    assert result.traceback[0].endswith(f"{mod}.py:{call_line} in raising_target")
    assert f"{mod}.py:{raise_line} in _helper" in result.message
    assert 'raise RuntimeError("shape mismatch in my code")' in result.message  # the source line
    assert "flowmap_oracle" not in "".join(result.traceback)
    assert result.to_json()["traceback"] == result.traceback
    # reproduce raises the same message, chained to the user's exception
    with pytest.raises(CheckFailure) as info:
        reproduce("meanflow.target.random_network", f"{mod}:raising", **result.case.kwargs())
    assert f"{mod}.py:{raise_line} in _helper" in info.value.message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_failure_without_an_exception_has_no_traceback():
    def doubled(net, x, t, s, v):
        return 2 * v

    result = run_check(
        "meanflow.target.random_network", Implementation("x", targets={"meanflow": doubled})
    )
    assert result.status == "fail" and result.traceback is None
    assert result.to_json()["traceback"] is None


def test_a_network_called_with_the_wrong_arguments_says_what_the_user_did(user_module, tmp_path):
    mod = user_module("usercode_arity")
    result = run_check("meanflow.target.random_network", load_implementation(f"{mod}:arity"))
    assert result.status == "fail"
    assert result.message.splitlines()[0] == (
        "the implementation's meanflow target raised TypeError: the network was called with 2 "
        "arguments; your declared signature 'x_t_s' takes (x, t, s)"
    )
    assert "<locals>" not in result.message and "ConventionAdapter" not in result.message
    line = _line_of(tmp_path / f"{mod}.py", "return net(x, t)")
    assert result.traceback is not None
    assert result.traceback[-1].endswith(f"{mod}.py:{line} in two_argument_call")
    result = run_check("meanflow.target.random_network", load_implementation(f"{mod}:keywords"))
    assert "the network was called with keyword arguments (t, s); it takes 3 positional" in (
        result.message
    )


def test_the_declared_signature_names_the_networks_arguments():
    def two(net, x, t, s, v):
        return net(x, t)

    impl = Implementation("dt", conventions={"signature": "x_t_dt"}, targets={"meanflow": two})
    result = run_check("meanflow.target.random_network", impl)
    assert "your declared signature 'x_t_dt' takes (x, t, t - s)" in result.message


JAX_CODE = """
import jax
import jax.numpy as jnp
from flowmap_oracle.oracle import Implementation


def _helper(y):
    raise ValueError("bad thing in my JAX code")


def target(net, x, t, s, v):
    def u(x, t, s):
        return _helper(net(x, t, t - s))

    _, du = jax.jvp(u, (x, t, s), (v, jnp.ones_like(t), jnp.zeros_like(s)))
    return du


def implementation():
    conventions = {"framework": "jax", "dtype": "float32", "signature": "x_t_dt"}
    return Implementation("jax", conventions=conventions, targets={"meanflow": target})
"""


def test_jax_frames_are_the_users_not_a_note_about_removed_frames(user_module, tmp_path):
    pytest.importorskip("jax")
    mod = user_module("usercode_jax", JAX_CODE)
    result = run_check(
        "meanflow.target.random_network", load_implementation(f"{mod}:implementation")
    )
    assert result.status == "fail"
    assert result.message.splitlines()[0] == (
        "the implementation's meanflow target raised ValueError: bad thing in my JAX code"
    )
    assert "JAX has removed" not in result.message
    src = tmp_path / f"{mod}.py"
    assert [f.rsplit("/", 1)[-1] for f in result.traceback] == [
        f"{mod}.py:{_line_of(src, '_, du = jax.jvp')} in target",
        f"{mod}.py:{_line_of(src, 'return _helper(net')} in u",
        f"{mod}.py:{_line_of(src, 'raise ValueError')} in _helper",
    ]


# -- load time -------------------------------------------------------------------------------------


def test_an_exception_while_importing_the_users_module_is_one_line(user_module):
    mod = user_module("usercode_import_error", "x = 1\ny = 1 / 0\n")
    with pytest.raises(ImplementationError) as info:
        load_implementation(f"{mod}:implementation")
    message = str(info.value)
    assert message.startswith(f"importing '{mod}' failed: ZeroDivisionError: division by zero (")
    assert f"{mod}.py:2 in <module>)" in message and "\n" not in message


def test_a_missing_dependency_of_the_users_module_is_not_a_missing_module(user_module):
    mod = user_module("usercode_missing_dep", "import surely_not_installed_xyz\n")
    with pytest.raises(ImplementationError, match=f"importing '{mod}' failed: ModuleNotFoundError"):
        load_implementation(f"{mod}:implementation")
    with pytest.raises(ImplementationError, match="cannot import 'usercode_nowhere_xyz'"):
        load_implementation("usercode_nowhere_xyz:implementation")


def test_a_raising_factory_names_its_line(user_module):
    mod = user_module("usercode_factory", "def implementation():\n    raise KeyError('cfg')\n")
    with pytest.raises(ImplementationError) as info:
        load_implementation(f"{mod}:implementation")
    assert str(info.value).startswith(f"factory '{mod}:implementation' raised KeyError: 'cfg' (")
    assert f"{mod}.py:2 in implementation)" in str(info.value)


def test_jax_float64_without_x64_is_refused_when_the_implementation_is_built():
    jax = pytest.importorskip("jax")
    if jax.config.read("jax_enable_x64"):
        pytest.skip("x64 is enabled in this process")
    with pytest.raises(ImplementationError, match=r"jax_enable_x64.*declare dtype 'float32'"):
        Implementation("f64", conventions={"framework": "jax", "dtype": "float64"})
    with jax.enable_x64(True):
        Implementation("f64", conventions={"framework": "jax", "dtype": "float64"})
    Implementation("f32", conventions={"framework": "jax", "dtype": "float32"})
