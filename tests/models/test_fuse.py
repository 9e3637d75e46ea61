"""BN folding: the folded model equals the unfolded one in eval mode (2-D and 3-D, every option)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from naslung.models import MODEL_1, build_model
from naslung.models.fuse import count_batchnorms, fold_batchnorm, fold_conv_bn


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so folding has something to fold."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    "spec, attention, head, kernel, embedding",
    [
        (str(MODEL_1), "cbam", "angular", 7, "relu"),
        (str(MODEL_1), "cbam", "angular", 3, "linear"),
        ("[4,4,[8,16],[16,32],[32,64]]", "cbam-spatial-first", "linear", 7, "relu"),
        ("[4,4,[4],[8],[8]]", "none", "angular", 7, "linear"),
    ],
)
def test_folded_equals_unfolded(dims: int, spec: str, attention: str, head: str, kernel: int, embedding: str):
    torch.manual_seed(0)
    model = build_model(spec, attention=attention, head=head, spatial_dims=dims, cbam_kernel=kernel,
                        embedding=embedding)
    _randomise_bn(model)
    model.train()
    folded = fold_batchnorm(model)
    assert model.training and count_batchnorms(model) > 0  # the original is untouched
    assert count_batchnorms(folded) == 0 and not folded.training
    x = torch.randn(3, 1, *([16] * dims))
    model.eval()
    with torch.no_grad():
        ref, out = model(x), folded(x)
        assert torch.allclose(model.forward_features(x), folded.forward_features(x), rtol=1e-4, atol=1e-5)
    assert torch.allclose(ref, out, rtol=1e-4, atol=1e-5), (ref - out).abs().max()
    n_params = sum(p.numel() for p in folded.parameters())
    assert n_params < sum(p.numel() for p in model.parameters())  # BN gone, conv biases added


def test_fold_conv_bn_with_conv_bias_and_no_affine():
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 5, 3, padding=1, bias=True)
    bn = nn.BatchNorm3d(5, affine=False)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.eval()
    x = torch.randn(2, 3, 6, 6, 6)
    with torch.no_grad():
        assert torch.allclose(fold_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-5)
    with pytest.raises(TypeError):
        fold_conv_bn(bn, conv)
