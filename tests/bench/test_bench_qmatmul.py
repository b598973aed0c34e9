"""tools.bench_qmatmul: its raw kernel call is the op's, and its loops cover one decode step's matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.matmul import native_quantized
from tools.bench_qmatmul import benches, kernel_call, loop, tiny_q4_1

gguf = pytest.importorskip("gguf")


def _stacked(n, k, layers):
    return jax.tree.map(lambda a: jnp.stack([jnp.asarray(a)] * layers), tiny_q4_1(n, k))


def _params():
    layers = {name: _stacked(n, 64, 2) for name, n in {"wq": 32, "wk": 8, "wv": 8, "wo": 64}.items()}
    layers |= {"w_gate": _stacked(48, 64, 2), "w_up": _stacked(48, 64, 2), "w_down": _stacked(64, 64, 2)}
    return {"embed": tiny_q4_1(96, 64), "layers": layers}


def test_the_step_loop_holds_every_matrix_of_a_decode_step_and_not_the_tiny_one():
    named = dict(benches(_params()))
    assert list(named) == ["qkv", "o", "gate_up", "down", "head", "tiny", "step"]
    assert [w.shape for w in named["step"]] == [(2, 64, 48), (2, 64, 64), (2, 64, 96), (2, 64, 64), (1, 64, 96)]
    assert named["tiny"][0].shape == (2, 32, 16)  # as deep as the layers: calls, not dispatches, timed


def test_the_raw_call_is_the_op_s_native_matmul():
    if native_quantized.available() is not None:
        pytest.skip(native_quantized.available())
    w = _stacked(40, 64, 3)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64)), jnp.float32)
    np.testing.assert_array_equal(kernel_call(native_quantized.TARGET, x, w, 1), native_quantized.matmul(x, w, 1))


def test_a_loop_runs_each_layer_once():
    if native_quantized.available() is not None:
        pytest.skip(native_quantized.available())
    w = _stacked(40, 64, 3)
    expected = sum(float(native_quantized.matmul(jnp.ones((1, 64)), w, layer)[0, 0]) for layer in range(3))
    assert float(loop(native_quantized.TARGET, [w], 1)([w])) == pytest.approx(expected, rel=1e-6)
