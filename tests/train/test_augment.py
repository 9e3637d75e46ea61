import pytest
import torch

from naslung.train.augment import center_crop, crop_flip, random_crop_flip


@pytest.mark.parametrize("dims", [2, 3])
def test_crop_flip_equals_slicing_and_flipping(dims):
    g = torch.Generator().manual_seed(0)
    images = torch.rand((5, *([10] * dims)), generator=g)
    offsets = torch.randint(0, 5, (5, dims), generator=g)
    flips = torch.rand((5, dims), generator=g) < 0.5
    out = crop_flip(images, offsets, flips, 6)
    assert out.shape == (5, 1, *([6] * dims))
    for b in range(5):
        window = images[b][tuple(slice(int(o), int(o) + 6) for o in offsets[b])]
        axes = [k for k in range(dims) if flips[b, k]]
        expected = torch.flip(window, axes) if axes else window
        assert torch.equal(out[b, 0], expected)


def test_zero_offsets_without_flips_is_a_plain_crop():
    images = torch.arange(2 * 8 * 8 * 8, dtype=torch.float32).view(2, 8, 8, 8)
    out = crop_flip(images, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool), 4)
    assert torch.equal(out[:, 0], images[:, :4, :4, :4])


def test_center_crop():
    images = torch.rand(3, 20, 20, 20)
    assert torch.equal(center_crop(images, 16)[:, 0], images[:, 2:18, 2:18, 2:18])


def test_random_crop_flip_is_reproducible_and_varies():
    images = torch.rand(16, 20, 20, 20)
    a = random_crop_flip(images, 16, torch.Generator().manual_seed(3))
    b = random_crop_flip(images, 16, torch.Generator().manual_seed(3))
    c = random_crop_flip(images, 16, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_crop_rejects_too_small_inputs():
    with pytest.raises(ValueError, match="smaller"):
        random_crop_flip(torch.rand(2, 8, 8, 8), 16, torch.Generator())


def test_max_shift_limits_the_crop_to_the_centre():
    images = torch.zeros(64, 36, 36, 36)
    images[:, 17:19, 17:19, 17:19] = 1.0  # 2-voxel marker at the exact centre
    out = random_crop_flip(images, 16, torch.Generator().manual_seed(0), flip=False, max_shift=2)
    where = out[:, 0].flatten(1).argmax(1)
    z = where // (16 * 16)
    assert int(z.min()) >= 7 - 2 and int(z.max()) <= 7 + 2 and int(z.max()) > int(z.min())
    full = random_crop_flip(images, 16, torch.Generator().manual_seed(0), flip=False, max_shift=None)
    assert (full.flatten(1).sum(1) == 0).any()  # with the whole margin the marker can leave the window
