"""The FFT path of CBAM's spatial gate computes the same conv as the module, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from naslung.models import MODEL_1, build_model
from naslung.models.blocks.cbam import SpatialAttention, direct_spatial_conv
from naslung.models.blocks.fft_conv import fft_conv, fft_length


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kernel", [1, 3, 7])
@pytest.mark.parametrize("channels", [(2, 1), (3, 2)])
def test_fft_conv_equals_the_padded_conv(dims: int, kernel: int, channels: tuple[int, int]):
    torch.manual_seed(kernel + dims)
    c_in, c_out = channels
    sides = (4, 9, 16)[:dims] if dims == 3 else (9, 16)  # odd, even, smaller and larger than the kernel
    x = torch.randn(3, c_in, *sides, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in, *([kernel] * dims), dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, requires_grad=True)
    conv = F.conv3d if dims == 3 else F.conv2d
    ref = conv(x, w, b, padding=kernel // 2)
    # fft_conv computes in float32: compare with the float64 reference at float32 precision
    out = fft_conv(x.float(), w.float(), b.float())
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, w, b), grad)
    xf, wf, bf = (t.detach().float().requires_grad_() for t in (x, w, b))
    got = torch.autograd.grad(fft_conv(xf, wf, bf), (xf, wf, bf), grad.float())
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-4 * float(r.abs().max()))


def test_fft_length_is_smooth_and_alias_free():
    assert fft_length(32, 7) == 36  # not 38 = 2 * 19
    assert fft_length(16, 7) == 20 and fft_length(8, 7) == 12 and fft_length(1, 7) == 8
    for side in range(1, 70):
        for kernel in (1, 3, 5, 7, 9):
            n = fft_length(side, kernel)
            assert n >= side + kernel // 2 and n >= kernel
            m = n
            for f in (2, 3, 5):
                while m % f == 0:
                    m //= f
            assert m == 1


@pytest.mark.parametrize("kernel", [3, 5, 7, 9])
def test_fft_conv_has_no_wrap_around_at_any_side(kernel: int):
    """Every side 1..40 (a 2-D map S x 3): the shortened circular length still equals the padded conv
    (fft_conv computes in float32, so the tolerance is float32's; a wrapped-around term would be O(1))."""
    gen = torch.Generator().manual_seed(kernel)
    weight = torch.randn(1, 2, kernel, kernel, generator=gen, dtype=torch.float64)
    for side in range(1, 41):
        x = torch.randn(2, 2, side, 3, generator=gen, dtype=torch.float64)
        want = F.conv2d(x, weight, padding=kernel // 2)
        torch.testing.assert_close(fft_conv(x, weight), want, rtol=1e-5, atol=1e-5)


def test_fft_conv_keeps_the_input_dtype_and_refuses_even_kernels():
    x = torch.randn(2, 2, 8, 8, 8)
    w = torch.randn(1, 2, 3, 3, 3)
    out = fft_conv(x.bfloat16(), w.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), fft_conv(x.bfloat16().float(), w.bfloat16().float()), rtol=1e-2,
                               atol=1e-2)
    with pytest.raises(ValueError, match="odd kernel"):
        fft_conv(x, torch.randn(1, 2, 2, 2, 2))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kernel", [3, 7])
def test_spatial_gate_fft_path_equals_the_module_path(dims: int, kernel: int):
    torch.manual_seed(0)
    gate = SpatialAttention(dims, kernel)
    assert gate.fft  # the default on CPU
    x = torch.randn(4, 8, *([16] * dims), requires_grad=True)
    fast = gate(x)
    grads_fast = torch.autograd.grad(fast.sum(), (x, gate.conv.weight, gate.conv.bias))
    with direct_spatial_conv(gate):
        assert not gate.fft
        slow = gate(x)
        grads_slow = torch.autograd.grad(slow.sum(), (x, gate.conv.weight, gate.conv.bias))
    assert gate.fft  # restored
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.slow
def test_a_model_training_step_with_the_fft_gates_matches_the_module_gates():
    """Model-1 (7^3 gates at 32^3 .. 4^3): loss and every parameter gradient agree with the direct convs."""
    from naslung.losses import build_criterion

    torch.manual_seed(0)
    model = build_model(MODEL_1).train()
    x, y = torch.randn(8, 1, 32, 32, 32), torch.tensor([0, 1] * 4)

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(1)
        model.zero_grad()
        criterion = build_criterion("asoftmax", model)  # a fresh one: lambda depends on its step count
        loss = criterion(model.forward_features(x), y)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss_fast, grads_fast = step()
    with direct_spatial_conv(model):
        loss_slow, grads_slow = step()
    torch.testing.assert_close(loss_fast, loss_slow, rtol=1e-5, atol=1e-6)
    scale = max(float(g.abs().max()) for g in grads_slow)
    for a, b in zip(grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * scale)


def test_train_config_switches_the_gates(tmp_path):
    from naslung.models.blocks.cbam import set_spatial_fft
    from naslung.train.config import TrainConfig
    from naslung.train.engine import build

    gates = lambda m: {g.fft for g in m.modules() if isinstance(g, SpatialAttention)}  # noqa: E731
    assert TrainConfig().fft_gates is True
    model, _ = build(TrainConfig(arch="[4,4,[4],[4],[8]]"), spatial_dims=3)
    assert gates(model) == {True}
    model, _ = build(TrainConfig(arch="[4,4,[4],[4],[8]]", fft_gates=False), spatial_dims=3)
    assert gates(model) == {False}
    assert set_spatial_fft(model, True) == [False] * 4 and gates(model) == {True}
    saved = TrainConfig().to_dict()
    del saved["fft_gates"], saved["embedding"]  # a run config written before both fields existed
    assert TrainConfig.from_dict(saved).embedding == "relu" and TrainConfig.from_dict(saved).fft_gates


def test_the_written_out_backward_serves_either_input_alone_and_keeps_dtypes():
    torch.manual_seed(3)
    x = torch.randn(2, 2, 5, 6, 7, dtype=torch.float64)
    w = torch.randn(1, 2, 3, 3, 3, dtype=torch.float64)
    grad = torch.randn(2, 1, 5, 6, 7, dtype=torch.float64)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    want_x, want_w = torch.autograd.grad(F.conv3d(xr, wr, padding=1), (xr, wr), grad)
    xf = x.float().requires_grad_()
    (got_x,) = torch.autograd.grad(fft_conv(xf, w.float()), xf, grad.float())  # the weight needs none
    torch.testing.assert_close(got_x.double(), want_x, rtol=1e-4, atol=1e-4)
    wf = w.float().requires_grad_()
    (got_w,) = torch.autograd.grad(fft_conv(x.float(), wf), wf, grad.float())  # the input needs none
    torch.testing.assert_close(got_w.double(), want_w, rtol=1e-4, atol=1e-4)
    xb, wb = x.bfloat16().requires_grad_(), w.bfloat16().requires_grad_()
    gx, gw = torch.autograd.grad(fft_conv(xb, wb), (xb, wb), grad.bfloat16())
    assert gx.dtype == torch.bfloat16 and gw.dtype == torch.bfloat16


@pytest.mark.parametrize("conjugate", [False, True])
def test_the_fused_spectrum_mix_equals_torch_ops(conjugate: bool):
    """``_mix`` on the ``spectrum_mix`` kernel against the same sum in torch's ops, on the forward's and the
    backward's (transposed) operands; with a gradient to track it keeps torch's ops."""
    from naslung.models.blocks import fft_conv as module

    if module.cbam_ops() is None:
        pytest.skip("fused kernels unavailable")
    torch.manual_seed(3)
    spectra = torch.randn(5, 2, 8, 8, 5, dtype=torch.complex64)
    filters = torch.randn(3, 2, 8, 8, 5, dtype=torch.complex64)

    def by_torch(a, b):
        b = b.conj() if conjugate else b
        return sum(a[:, c : c + 1] * b[:, c] for c in range(a.shape[1]))

    def cplx(*shape):
        return torch.randn(*shape, dtype=torch.complex64)

    cases = [(spectra, filters), (spectra.transpose(0, 1), cplx(2, 5, 8, 8, 5)),
             (cplx(4, 3, 6, 4), cplx(2, 3, 6, 4))]
    for a, b in cases:  # the 3-D forward's, a transposed backward operand's, and a 2-D gate's
        assert module._mix_kernels(a, b) is not None
        got, want = module._mix(a, b, conjugate), by_torch(a, b)
        assert got.shape == want.shape and got.is_contiguous()
        assert float((got - want).abs().max() / want.abs().max()) < 1e-6
        assert torch.equal(module._mix(a, b, conjugate, fused=False), want)  # the switch keeps torch's ops
    from naslung.models.kernels.switch import set_fused_kernels

    gate = SpatialAttention()
    set_fused_kernels(gate, False)
    assert gate.fused is False
    tracked = spectra.clone().requires_grad_()
    assert module._mix_kernels(tracked, filters) is None
    module._mix(tracked, filters, conjugate).abs().sum().backward()
    assert tracked.grad is not None


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(("depth", "kernel", "channels"), [(4, 7, (2, 1)), (9, 3, (3, 2)), (16, 7, (2, 1)),
                                                           (5, 1, (2, 3))])
def test_the_plane_fft_conv_and_the_3d_fft_conv_equal_the_padded_conv(depth, kernel, channels, fused,
                                                                      monkeypatch):
    """A 3-D map runs through per-plane 2-D FFTs and frequency-domain depth taps where the fused kernels
    are on (``_PlaneFFTConv``), else through the 3-D FFT: outputs and all three gradients against float64
    ``conv3d``, depths shorter and longer than the kernel."""
    from naslung.models.blocks import fft_conv as module

    if fused and module.cbam_ops() is None:
        pytest.skip("fused kernels unavailable")
    torch.manual_seed(depth + kernel)
    c_in, c_out = channels
    x = torch.randn(3, c_in, depth, 11, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in, kernel, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, requires_grad=True)
    ref = F.conv3d(x, w, b, padding=kernel // 2)
    grad = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, w, b), grad)
    xf, wf, bf = (t.detach().float().requires_grad_() for t in (x, w, b))
    calls = []
    original = module._PlaneFFTConv.apply
    monkeypatch.setattr(module._PlaneFFTConv, "apply", lambda *a: calls.append(1) or original(*a))
    out = fft_conv(xf, wf, bf, fused=fused)
    assert bool(calls) == fused
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad(out, (xf, wf, bf), grad.float())
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-4 * float(r.abs().max()))


@pytest.mark.parametrize(("side", "full"), [((32, 32), (36, 36)), ((16, 16), (20, 20)), ((8, 8), (12, 12)),
                                            ((4, 4), (8, 8)), ((11, 8), (15, 12)), ((17, 3), (20, 5)),
                                            ((5, 7), (9, 10)), ((1, 1), (1, 1)), ((33, 9), (36, 15))])
def test_the_plane_ffts_equal_torch_fft_in_float64(side, full):
    """The fused kernels' own 2-D transforms (``kernels/plane_fft.h``): ``plane_rfft2`` equals
    ``torch.fft.rfftn(x, s=full)`` and ``plane_irfft2`` a window of ``torch.fft.irfftn(y, s=full)``, in
    float64, for lengths with the factors 2, 3, 4 and 5, odd lengths, rows in partial groups of 16, and
    spectra whose frequencies 0 and L2 / 2 have imaginary parts (which a real inverse ignores)."""
    from naslung.models.kernels import cbam_ops

    ops = cbam_ops()
    if ops is None:
        pytest.skip("fused kernels unavailable")
    (h, w), (l1, l2) = side, full
    torch.manual_seed(h * 100 + w)
    x = torch.randn(3, 2, h, w, dtype=torch.float64)
    want = torch.fft.rfftn(x, s=full, dim=(-2, -1))
    got = ops.plane_rfft2(x.float(), l1, l2)
    assert got.shape == want.shape and got.dtype == torch.complex64
    torch.testing.assert_close(got.to(torch.complex128), want, rtol=0, atol=1e-6 * float(want.abs().max()))
    y = torch.randn(3, 2, l1, l2 // 2 + 1, dtype=torch.complex128)
    inverse = torch.fft.irfftn(y, s=full, dim=(-2, -1))
    for r0, c0, ho, wo in ((0, 0, l1, l2), ((l1 - h) // 2, (l2 - w) // 2, h, w), (l1 - 1, l2 - 1, 1, 1)):
        got = ops.plane_irfft2(y.to(torch.complex64), l1, l2, r0, ho, c0, wo)
        torch.testing.assert_close(got.double(), inverse[..., r0:r0 + ho, c0:c0 + wo], rtol=0,
                                   atol=1e-6 * float(inverse.abs().max()))
    with pytest.raises(RuntimeError, match="inside the L1 x L2 plane"):
        ops.plane_irfft2(y.to(torch.complex64), l1, l2, 0, l1 + 1, 0, 1)
    with pytest.raises(RuntimeError, match="at most L1 x L2"):
        ops.plane_rfft2(torch.zeros(1, l1 + 1, w), l1, l2)
    with pytest.raises(RuntimeError, match="no prime factor over 5"):  # 11 and 7: no radix for them
        ops.plane_rfft2(torch.zeros(1, 1, 1), 11, l2)
    with pytest.raises(RuntimeError, match="no prime factor over 5"):
        ops.plane_irfft2(torch.zeros(1, l1, 4, dtype=torch.complex64), l1, 7, 0, 1, 0, 1)


def test_the_fused_fft_paths_pass_under_avx2_dispatch(rerun_under_avx2):
    """The plane FFTs, the plane-FFT conv and the fused spectrum mix, built and run as on an AVX2-only CPU."""
    rerun_under_avx2(__file__, "plane_fft or fused_spectrum_mix")
