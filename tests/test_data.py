import subprocess
import sys

import numpy as np
import pytest
import torch

from acdistill.data import iterate, load_split, random_crop_flip
from acdistill.errors import AcdistillError


def test_quick_profile_split_is_exact_and_ordered(mirror):
    train = load_split("cifar10", True, 4000, data_dir=mirror)
    assert train.images.shape == (4000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.source == "mirror:cifar10_lossless_subset.npz"
    assert train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # CIFAR-10 train order
    assert torch.equal(train.indices, torch.arange(4000))


def test_jpeg_copy_covers_larger_subsets_with_a_warning(mirror, capsys):
    test = load_split("cifar10", False, 1500, data_dir=mirror)
    assert "warning: cifar10: using the lossy (JPEG) mirror copy" in capsys.readouterr().err
    exact = load_split("cifar10", False, 1000, data_dir=mirror)
    assert len(test) == 1500 and torch.equal(test.labels[:1000], exact.labels)


def test_index_file_subset(mirror, tmp_path):
    f = tmp_path / "idx.txt"
    f.write_text("5\n0\n17\n")
    part = load_split("cifar10", True, str(f), data_dir=mirror)
    full = load_split("cifar10", True, 20, data_dir=mirror)
    assert part.indices.tolist() == [5, 0, 17]
    assert torch.equal(part.images[2], full.images[17]) and part.labels.tolist() == full.labels[[5, 0, 17]].tolist()


def test_mnist_becomes_three_channel_32(mirror):
    test = load_split("mnist", False, 10, data_dir=mirror)
    assert test.images.shape == (10, 3, 32, 32)
    assert torch.equal(test.images[:, 0], test.images[:, 2])
    assert test.images[:, :, :2].sum() == 0  # zero padding, no interpolation


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(AcdistillError) as err:
        load_split("mnist", True, 10, root=str(tmp_path / "tv"), data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "mnist.npz") in msg and "torchvision download" in msg and "ACDISTILL_DATA_DIR" in msg


def test_corrupted_npz_is_reported(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(AcdistillError, match="corrupted or truncated"):
        load_split("mnist", True, 10, data_dir=tmp_path)


def test_subset_beyond_the_data_is_an_error(mirror):
    with pytest.raises(AcdistillError, match="mnist.npz \\(missing, or too few images for the subset\\)"):
        load_split("mnist", True, 3_000_000, data_dir=mirror, root="/nonexistent/for/test")


def test_crop_flip_moves_pixels_without_inventing_them():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    out = random_crop_flip(x, gen, pad=2)
    assert out.shape == x.shape
    for i in range(2):
        values = set(out[i].unique().tolist()) - {0.0}
        assert values <= set(x[i].unique().tolist())  # only original pixels, or zero padding
    no_pad = random_crop_flip(x, gen, pad=0)
    assert all(torch.equal(no_pad[i], x[i]) or torch.equal(no_pad[i], x[i].flip(-1)) for i in range(2))


def test_epoch_order_is_a_function_of_the_seed(mirror):
    data = load_split("cifar10", True, 300, data_dir=mirror)
    a = [b.index for b in iterate(data, 64, shuffle=True, augment=True, seed=3)]
    b = [b.index for b in iterate(data, 64, shuffle=True, augment=True, seed=3)]
    c = [b.index for b in iterate(data, 64, shuffle=True, augment=True, seed=4)]
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[0], c[0])
    assert sorted(torch.cat(a).tolist()) == list(range(300))
    batch = next(iterate(data, 8))
    assert batch.x.dtype == torch.float32 and batch.x.min() >= 0 and batch.x.max() <= 1
    assert np.allclose(batch.x.numpy() * 255, data.images[:8].numpy())


def test_the_unpacked_device_pack_is_a_mirror_with_the_exact_test_images(mirror, tmp_path):
    """The GPU node's data (docs/gpu.md): cifar10_device_pack.npz, decoded by its own script into a directory that
    holds cifar10_jpeg.npz alone. acdistill reads all of CIFAR-10 from it, with test images 0-999 exact."""
    unpack = [sys.executable, str(mirror / "unpack_device_pack.py"), str(mirror / "cifar10_device_pack.npz")]
    done = subprocess.run([*unpack, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["cifar10_jpeg.npz"]
    train = load_split("cifar10", True, None, data_dir=tmp_path)
    test = load_split("cifar10", False, 1000, data_dir=tmp_path)
    exact = load_split("cifar10", False, 1000, data_dir=mirror)  # the lossless file
    assert train.source == test.source == "mirror:cifar10_jpeg.npz" and exact.source.endswith("lossless_subset.npz")
    assert len(train) == 50000 and torch.equal(train.labels, load_split("cifar10", True, None, data_dir=mirror).labels)
    assert torch.equal(test.images, exact.images) and torch.equal(test.labels, exact.labels)
    beyond = load_split("cifar10", False, 1001, data_dir=tmp_path).images[1000].int()
    jpeg = load_split("cifar10", False, 1001, data_dir=mirror).images[1000].int()
    assert 0 < (beyond - jpeg).abs().float().mean() < 5  # image 1000 on: re-encoded, a few levels off the JPEG copy
