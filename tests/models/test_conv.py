"""naslung's Conv3d: one-sample CPU inputs run on oneDNN, with the outputs and gradients of F.conv3d."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

from naslung.models import MODEL_1, build_model
from naslung.models.blocks.cbam import SpatialAttention
from naslung.models.blocks.conv import Conv3d, conv_macs, onednn_applies, set_onednn_at_batch1
from naslung.models.fast import eval_model
from naslung.models.fuse import fold_batchnorm


def _kernels(fn) -> set[str]:
    """Names of the conv kernels ``fn()`` ran."""
    with profile() as prof:
        fn()
    return {e.key for e in prof.key_averages() if "conv" in e.key and e.key.startswith("aten::")}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("c_in", "c_out", "kernel", "stride", "bias"),
                         [(1, 4, 3, 1, False), (4, 4, 3, 2, True), (4, 8, 3, 1, True), (2, 1, 7, 1, True)])
def test_batch1_runs_on_onednn_and_equals_the_float64_conv(channels_last: bool, c_in: int, c_out: int,
                                                            kernel: int, stride: int, bias: bool) -> None:
    torch.manual_seed(c_in + kernel)
    conv = Conv3d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)
    conv.fused = False  # this is oneDNN's batch-1 path; the direct training kernels: test_fused_conv.py
    ref = copy.deepcopy(conv).double()
    x = torch.randn(1, c_in, 24, 20, 22)  # every case above MIN_ONEDNN_MACS
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
        conv = conv.to(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    assert onednn_applies(x, conv.weight) and conv.runs_onednn(x)
    assert conv_macs(x, conv.weight, conv.stride, conv.padding, conv.dilation) == F.conv3d(
        x, conv.weight, None, stride, kernel // 2).numel() * c_in * kernel**3
    assert "aten::mkldnn_convolution" in _kernels(lambda: conv(x))
    out = conv(x)
    x64 = x.detach().double().requires_grad_(True)
    want = F.conv3d(x64, ref.weight, ref.bias, stride, kernel // 2)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(want)
    got = torch.autograd.grad(out, (x, conv.weight), grad.float())
    need = torch.autograd.grad(want, (x64, ref.weight), grad)
    for g, r in zip(got, need, strict=True):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-4 * float(r.abs().max()))


def test_every_other_case_keeps_torchs_own_choice() -> None:
    conv = Conv3d(4, 4, 3, padding=1)
    one = torch.randn(1, 4, 16, 16, 16)
    assert not onednn_applies(torch.randn(2, 4, 8, 8, 8), conv.weight)  # torch picks oneDNN itself there
    assert not onednn_applies(one.double(), conv.weight.double())
    assert not onednn_applies(one, Conv3d(4, 4, 1).weight)  # 1^3: torch's kernel was as fast or faster
    small = Conv3d(8, 8, 3, padding=1)  # 8 -> 8 on 4^3: 110 k multiply-adds, oneDNN's call cost dominates
    assert not small.runs_onednn(torch.randn(1, 8, 4, 4, 4)) and small.runs_onednn(torch.randn(1, 8, 8, 8, 8))
    assert "aten::mkldnn_convolution" not in _kernels(lambda: small(torch.randn(1, 8, 4, 4, 4)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn_applies(one, conv.weight) and conv(one).dtype == torch.bfloat16
    assert "aten::mkldnn_convolution" not in _kernels(lambda: set_onednn_at_batch1(conv, False)(one))
    traced = torch.jit.trace(set_onednn_at_batch1(conv, True), one)  # exporters see the plain conv
    assert "mkldnn_convolution" not in str(traced.graph) and "conv" in str(traced.graph)
    torch.testing.assert_close(traced(one), conv(one))


def test_the_models_hand_out_this_conv_and_a_batch1_model_equals_a_batch_of_one() -> None:
    torch.manual_seed(0)
    model = build_model(MODEL_1).eval()
    assert all(type(m) is Conv3d for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    served = eval_model(model)
    plain = fold_batchnorm(set_onednn_at_batch1(copy.deepcopy(model), False))  # folding keeps the switch
    assert not any(m.onednn_at_batch1 for m in plain.modules() if isinstance(m, Conv3d))
    x = torch.randn(3, 1, 32, 32, 32)
    with torch.no_grad():
        batch = served(x)
        single = torch.cat([served(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(single, batch, rtol=1e-5, atol=1e-5)


def test_an_eval_gate_reuses_its_kernel_spectrum_only_while_the_weights_are_unchanged() -> None:
    torch.manual_seed(0)
    gate = SpatialAttention(3, 7)
    x = torch.randn(2, 4, 8, 8, 8)

    def direct(inp: torch.Tensor = x) -> torch.Tensor:
        gate.fft = False
        try:
            return gate(inp)
        finally:
            gate.fft = True

    out = gate(x)  # training: the spectrum is part of the graph and nothing is kept
    assert gate._spectrum_cache is None and out.requires_grad
    out.sum().backward()
    assert gate.conv.weight.grad is not None
    with torch.inference_mode():
        first = gate(x)
        kept = gate._spectrum_cache
        assert kept is not None and torch.equal(gate(x), first) and gate._spectrum_cache is kept
    with torch.no_grad():
        torch.testing.assert_close(first, direct(), rtol=1e-5, atol=1e-5)
        gate.conv.weight.data.mul_(-0.5)  # behind autograd's version counter: still seen
        torch.testing.assert_close(gate(x), direct(), rtol=1e-5, atol=1e-5)
        gate.load_state_dict({k: torch.randn_like(v) for k, v in gate.state_dict().items()})
        torch.testing.assert_close(gate(x), direct(), rtol=1e-5, atol=1e-5)
        small = x[:, :, :5, :6]  # another map size: another FFT length, another spectrum
        torch.testing.assert_close(gate(small), direct(small), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gate(x), direct(), rtol=1e-5, atol=1e-5)
    twin = copy.deepcopy(gate)  # a module used under inference mode can still be copied and trained
    twin(x).sum().backward()
    assert twin.conv.weight.grad is not None
