"""The fused CPU kernels (naslung.models.kernels): equal to float64 references, forward and backward, on the
fused path and on torch's path; the fallback when they cannot be built; the switches."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from naslung.models import MODEL_1, build_model
from naslung.models.attention import capture_attention
from naslung.models.blocks.batchnorm import BatchNorm2d, BatchNorm3d
from naslung.models.blocks.cbam import CBAM
from naslung.models.kernels import bn_relu as bn_relu_module
from naslung.models.kernels import bn_relu_ops, cbam_ops, load_ops
from naslung.models.kernels import cbam as cbam_kernels
from naslung.models.kernels.bn_relu import bn_relu
from naslung.models.kernels.cbam import fused_applies, serving_applies
from naslung.models.kernels.switch import set_fused_kernels

pytestmark = pytest.mark.skipif(cbam_ops() is None or bn_relu_ops() is None,
                                reason="the fused kernels could not be built here (a warning says why)")


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if not channels_last:
        return x.contiguous()
    return x.contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("dims,channels,channels_last", [(3, 4, True), (3, 4, False), (3, 8, True),
                                                         (3, 5, True), (2, 8, False), (2, 16, True),
                                                         (3, 32, True)])
def test_fused_cbam_equals_float64(dims, channels, channels_last):
    torch.manual_seed(0)
    reference = CBAM(channels, spatial_dims=dims).double()
    reference.fused = False
    x = torch.relu(torch.randn((3, channels) + (9,) * dims, dtype=torch.float64))
    x[0, :, 0] = 0  # positions where every channel ties (amax shares the gradient) and all-zero rows
    x[1, 0] = 0  # a whole channel map at 0: the spatial max ties everywhere (max(dim) takes the first)
    x_ref = x.clone().requires_grad_()
    out_ref = reference(x_ref)
    grad = torch.randn_like(out_ref)
    out_ref.backward(grad)

    fused = CBAM(channels, spatial_dims=dims)
    fused.load_state_dict(reference.state_dict())
    x_fused = _layout(x.float(), channels_last).requires_grad_()
    assert fused_applies(fused, x_fused)
    out = fused(x_fused)
    out.backward(_layout(grad.float(), channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last_3d if dims == 3 else torch.channels_last) \
        or not channels_last
    assert _rel(out, out_ref) < 1e-5
    assert _rel(x_fused.grad, x_ref.grad) < 1e-5
    for (name, p), p_ref in zip(fused.named_parameters(), reference.parameters(), strict=True):
        assert _rel(p.grad, p_ref.grad) < 1e-4, name


def test_torch_path_equals_fused_path_in_float32():
    torch.manual_seed(1)
    a, b = CBAM(4), CBAM(4)
    b.load_state_dict(a.state_dict())
    a.fused = False
    x = _layout(torch.relu(torch.randn(2, 4, 12, 12, 12)), True)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn_like(x)
    a(xa).backward(grad)
    b(xb).backward(grad)
    assert not fused_applies(a, xa) and fused_applies(b, xb)
    assert _rel(xb.grad, xa.grad.double()) < 1e-5


def test_inference_hooks_and_spatial_first_keep_torch_path():
    cbam = CBAM(4)
    x = torch.rand(1, 4, 8, 8, 8)
    with torch.no_grad():
        assert not fused_applies(cbam, x)  # no gradient: inference keeps torch's ops
    assert not fused_applies(CBAM(4, order="spatial-first"), x.requires_grad_())
    model = build_model(MODEL_1)
    with capture_attention(model) as maps:  # explanations hook the gates: the maps must be captured
        model(torch.rand(2, 1, 32, 32, 32, requires_grad=True))
    assert set(maps) == {"stage2", "stage3", "stage4", "stage5"}


@pytest.mark.parametrize("batch,channels,side,chunk", [(1, 4, 16, None), (3, 8, 9, None), (2, 5, 7, None),
                                                       (1, 8, 4, None), (2, 32, 5, None), (1, 4, 31, None),
                                                       (5, 4, 9, 2 * 4 * 9 * 10 * 11), (3, 8, 6, 1)])
def test_served_cbam_equals_float64(batch, channels, side, chunk, monkeypatch):
    """Inference on the fused forward kernels (channels-last 3-D, the serving layout), ties included: the
    one-call ``serve`` (the default; a batch in chunks of 2 samples and 1 where ``chunk`` says so, the last
    chunk short) and, with the gate's mix off the kernels, the pass-by-pass path."""
    if chunk is not None:
        monkeypatch.setattr(cbam_kernels, "SERVE_CHUNK_FLOATS", chunk)
    torch.manual_seed(batch)
    reference = CBAM(channels).double().eval()
    reference.fused = False
    x = torch.relu(torch.randn(batch, channels, side, side + 1, side + 2, dtype=torch.float64))
    x[0, :, 0] = 0
    served = CBAM(channels).eval()
    served.load_state_dict(reference.state_dict())
    x_cl = _layout(x.float(), True)
    with torch.no_grad():
        assert serving_applies(served, x_cl) and not fused_applies(served, x_cl)
        assert not serving_applies(served, x.float().contiguous())  # contiguous: torch's ops
        out = served(x_cl)
        want = reference(x)
        served.spatial.fused = False
        by_passes = served(x_cl)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    assert _rel(out, want) < 1e-5 and _rel(by_passes, want) < 1e-5
    assert not serving_applies(served, x_cl.requires_grad_())  # training: the fused autograd node instead


def test_served_cbam_saturates_and_propagates_nan_as_torch_does():
    """``serve``'s vector sigmoid on gate logits in the hundreds (both signs: 0 and 1 exactly, no NaN from
    the exponential's overflow), and a NaN voxel reaching its sample's output only."""
    torch.manual_seed(0)
    reference = CBAM(4).double().eval()
    reference.fused = False
    with torch.no_grad():
        reference.spatial.conv.weight.mul_(400.0)
        reference.channel.mlp[2].weight.mul_(300.0)
    served = CBAM(4).eval()
    served.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 8, 8, 9, dtype=torch.float64)
    x_cl = _layout(x.float(), True)
    with torch.no_grad():
        out, want = served(x_cl), reference(x)
        assert (want.abs() > 0).any() and (reference.spatial(x * reference.channel(x)[..., None, None, None])
                                            .abs() < 1e-30).any()  # the gates do saturate
        assert torch.allclose(out.double(), want, rtol=1e-5, atol=1e-6) and not out.isnan().any()
        x_cl[1, 2, 3, 3, 3] = float("nan")
        with_nan = served(x_cl)
    assert with_nan[1].isnan().any() and torch.equal(with_nan[0], out[0])


def test_served_cbam_keeps_explanation_hooks_working():
    model = build_model(MODEL_1).eval().to(memory_format=torch.channels_last_3d)
    x = _layout(torch.rand(1, 1, 32, 32, 32), True)
    with torch.no_grad(), capture_attention(model) as maps:
        model(x)
    assert set(maps) == {"stage2", "stage3", "stage4", "stage5"}


@pytest.mark.parametrize("channels,dims", [(4, 3), (8, 3), (16, 3), (32, 3), (64, 3), (4, 2)])
def test_fused_bn_relu_equals_float64(channels, dims):
    torch.manual_seed(2)
    shape = (4, channels) + (8,) * dims
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    reference = (torch.nn.BatchNorm3d if dims == 3 else torch.nn.BatchNorm2d)(channels).double()
    torch.nn.init.uniform_(reference.weight, 0.5, 1.5)
    torch.nn.init.uniform_(reference.bias, -0.5, 0.5)
    x_ref = x.clone().requires_grad_()
    out_ref = torch.relu(reference(x_ref))
    grad = torch.randn_like(out_ref)
    out_ref.backward(grad)

    bn = (BatchNorm3d if dims == 3 else BatchNorm2d)(channels)
    with torch.no_grad():
        bn.weight.copy_(reference.weight)
        bn.bias.copy_(reference.bias)
    x_fused = _layout(x.float(), True).requires_grad_()
    assert bn_relu_module.fused_applies(bn, x_fused)
    out = bn_relu(bn, x_fused)
    out.backward(_layout(grad.float(), True))
    assert _rel(out, out_ref) < 1e-5
    assert _rel(x_fused.grad, x_ref.grad) < 1e-5
    assert _rel(bn.weight.grad, reference.weight.grad) < 1e-5
    assert _rel(bn.bias.grad, reference.bias.grad) < 1e-5
    assert _rel(bn.running_mean, reference.running_mean) < 1e-5
    assert _rel(bn.running_var, reference.running_var) < 1e-5
    assert int(bn.num_batches_tracked) == 1


def test_bn_relu_falls_back_where_the_kernel_does_not_apply():
    bn = BatchNorm3d(6)  # 6 does not divide the kernel's vector width
    x = _layout(torch.randn(2, 6, 4, 4, 4), True).requires_grad_()
    assert not bn_relu_module.fused_applies(bn, x)
    torch.testing.assert_close(bn_relu(bn, x), torch.relu(torch.nn.functional.batch_norm(
        x.detach(), None, None, bn.weight.detach(), bn.bias.detach(), training=True)), atol=1e-5, rtol=1e-5)
    bn.eval()
    assert not bn_relu_module.fused_applies(bn, x)


def test_a_whole_model1_step_matches_torch_path():
    torch.manual_seed(3)
    fused = build_model(MODEL_1).to(memory_format=torch.channels_last_3d)
    plain = build_model(MODEL_1).to(memory_format=torch.channels_last_3d)
    plain.load_state_dict(fused.state_dict())
    assert set_fused_kernels(plain, False) == [True] * len(set_fused_kernels(plain, False))
    x = _layout(torch.randn(4, 1, 32, 32, 32), True)
    losses, grads = [], []
    for model in (fused, plain):
        model.train()
        loss = model.forward_features(x).square().mean()
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert _rel(grads[0], grads[1].double()) < 1e-3
    stats = [torch.cat([b.running_var for b in m.modules() if isinstance(b, BatchNorm3d)])
             for m in (fused, plain)]
    torch.testing.assert_close(stats[0], stats[1], atol=1e-5, rtol=1e-5)


def test_a_failed_build_falls_back_with_one_warning(monkeypatch, caplog):
    from torch.utils import cpp_extension

    monkeypatch.delenv("NASLUNG_FUSED", raising=False)
    monkeypatch.setenv("NASLUNG_KERNEL_CACHE", str(__import__("tempfile").mkdtemp()))

    def broken(*args, **kwargs):
        raise RuntimeError("Error building extension: g++ not found")

    monkeypatch.setattr(cpp_extension, "load", broken)
    load_ops.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="naslung"):
            assert load_ops("bn_relu") is None
        assert "fused bn_relu kernels unavailable (Error building extension: g++ not found)" in caplog.text
        cbam = CBAM(4)
        x = torch.rand(2, 4, 6, 6, 6, requires_grad=True)
        assert cbam_ops() is None and not fused_applies(cbam, x)
        cbam(x).sum().backward()  # torch's ops still train
        assert x.grad is not None
    finally:
        load_ops.cache_clear()


_NO_OPENMP_CHILD = """
import logging, sys
import naslung.models.kernels as kernels
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
real_build, tried = kernels._build, []
def no_openmp(kernel, source_file, flags, folder, name):
    tried.append(kernels.OPENMP_FLAG in flags)
    if kernels.OPENMP_FLAG in flags:
        raise RuntimeError("g++: error: unrecognized command-line option '-fopenmp'")
    real_build(kernel, source_file, flags, folder, name)
kernels._build = no_openmp
ok = kernels.load_ops("bn_relu") is not None
kernels.load_ops.cache_clear()
ok = ok and kernels.load_ops("bn_relu") is not None  # loads the serial build: no second OpenMP try
print("RESULT", ok, tried)
"""


@pytest.mark.slow
def test_without_openmp_the_kernels_build_serial_once(tmp_path):
    """A compiler without OpenMP (``-fopenmp`` fails) gets the serial build, and later loads take it without
    trying OpenMP again; with OpenMP every kernel is built with it (``at::parallel_for`` is an inline OpenMP
    loop: without the flag it runs on one thread). In a child process: a process can register a kernel
    library's operators only once."""
    from naslung.models import kernels

    assert kernels.OPENMP_FLAG in kernels._build_flags("AVX2")
    env = {**os.environ, "NASLUNG_KERNEL_CACHE": str(tmp_path)}
    env.pop("NASLUNG_FUSED", None)
    out = subprocess.run([sys.executable, "-c", _NO_OPENMP_CHILD], capture_output=True, text=True, env=env,
                         timeout=300)
    assert "RESULT True [True, False]" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "did not build with OpenMP" in out.stdout
    assert list(tmp_path.glob("*.no-openmp"))


def test_the_environment_switch_turns_them_off():
    code = ("import torch; from naslung.models.kernels import cbam_ops, fused_enabled; "
            "print(fused_enabled(), cbam_ops())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "NASLUNG_FUSED": "0"})
    assert out.stdout.split() == ["False", "None"]


@pytest.mark.slow
def test_the_same_checks_pass_under_avx2_dispatch(rerun_under_avx2):
    """Rerun this file's equivalence tests with the kernels built for AVX2 and torch and oneDNN capped to
    AVX2 (as on an AVX2-only laptop)."""
    rerun_under_avx2(__file__, "float64 or whole_model1 or torch_path or served")


def test_a_nan_propagates_as_on_torch_path():
    """A non-finite input must reach the loss (training stops on it), as it does through torch's ops."""
    bn = BatchNorm3d(4)
    x = _layout(torch.randn(2, 4, 4, 4, 4), True)
    x[0, 1, 0, 0, 0] = float("nan")
    x.requires_grad_()
    assert bn_relu_module.fused_applies(bn, x)
    assert torch.isnan(bn_relu(bn, x)).any()
    cbam = CBAM(4)
    y = _layout(torch.rand(2, 4, 6, 6, 6), True)
    y[1, 2, 3, 3, 3] = float("nan")
    y.requires_grad_()
    assert fused_applies(cbam, y)
    assert torch.isnan(cbam(y)[1]).any()


@pytest.mark.parametrize("channels", [4, 8, 24])
def test_spatial_pool_vector_path_keeps_first_max_and_nan_rules(channels):
    """The vector paths of ``spatial_pool`` (4 channels, or blocks of 8) follow each channel in one or more
    lanes (every other voxel at 4 channels): merged, the mean, the max and the *first* position of the max
    (a NaN first) must be what the scalar rule gives, on rows whose length leaves a tail and whose sums cross
    the 256-step flush."""
    ops = cbam_ops()
    if ops is None:
        pytest.skip("fused kernels unavailable")
    torch.manual_seed(channels)
    x = torch.randint(0, 5, (3, channels, 9, 9, 11)).float()  # many ties; P = 891 is odd
    x[1, 2, 8, 8, 10] = 7.0  # the maximum at the row's very last voxel (the tail when 2 voxels per lane)
    x[2, 1, 4, 4, 3] = float("nan")  # a NaN after ordinary maxima
    x[2, 1, 6, 0, 0] = float("nan")  # and a later one: the first NaN's position is kept
    x[0, -1, 2, 2, 2] = 9.0  # the last channel (the last block of 8 at 24 channels)
    avg, peak, argmax = ops.spatial_pool(_layout(x, True))
    flat = x.flatten(2).double().numpy()
    assert torch.allclose(avg[:2].double(), torch.from_numpy(flat[:2].mean(-1)), rtol=1e-6)
    assert torch.equal(argmax, torch.from_numpy(flat.argmax(-1)))  # numpy: first maximum, a NaN first
    assert torch.equal(peak.isnan(), torch.from_numpy(np.isnan(flat).any(-1)))
    assert torch.equal(peak.nan_to_num(-1), torch.from_numpy(flat.max(-1)).float().nan_to_num(-1))
