"""distinfer.dataset: idx reading, the embedded MNIST subset, pipelines, sharding and seeds."""
from __future__ import annotations

import gzip
import hashlib
import logging
import struct
from pathlib import Path

import numpy as np
import pytest

import distinfer.dataset as ds
from distinfer import dtype as mstype
from distinfer.dataset import config
from distinfer.dataset.idx import read_idx, read_idx_header


@pytest.fixture(autouse=True)
def _fresh_seed_state():
    """Every test starts (and leaves) the pipeline seeds unset."""
    saved = dict(config._state)
    config._state.update(seed=None, global_seed=None)
    yield
    config._state.clear()
    config._state.update(saved)


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(big).tobytes()


def write(path: Path, payload: bytes) -> Path:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_mnist(root: Path, n_train: int = 6, n_test: int = 4, gz: bool = False) -> Path:
    """A tiny MNIST directory: image i is filled with value i, labels are i % 10."""
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    start = 0
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        values = np.arange(start, start + n)
        images = np.broadcast_to(values[:, None, None], (n, 28, 28)).astype(np.uint8)
        write(root / f"{prefix}-images-idx3-ubyte{ext}", idx_bytes(images))
        write(root / f"{prefix}-labels-idx1-ubyte{ext}", idx_bytes((values % 10).astype(np.uint8)))
        start += n
    return root


def rows(dataset, key: str | None = None) -> list:
    out = list(dataset.create_dict_iterator(num_epochs=1, output_numpy=True))
    return out if key is None else [r[key] for r in out]


# --- idx files --------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip_plain_and_gzip(tmp_path, suffix):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / f"x-idx3-ubyte{suffix}", idx_bytes(data))
    header = read_idx_header(path)
    assert header.shape == (2, 3, 4) and header.offset == 16
    np.testing.assert_array_equal(read_idx(path), data)


def test_idx_wider_types_are_big_endian(tmp_path):
    data = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    path = write(tmp_path / "w.gz", idx_bytes(data, 0x0C))
    out = read_idx(path)
    assert out.dtype == np.int32 and out.tolist() == data.tolist()


def test_idx_bad_magic(tmp_path):
    path = write(tmp_path / "bad-idx1-ubyte", b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(RuntimeError, match="bad-idx1-ubyte has a bad magic"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated_payload(tmp_path, suffix):
    payload = idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-100]
    path = write(tmp_path / f"t-idx3-ubyte{suffix}", payload)
    with pytest.raises(RuntimeError, match="truncated"):
        read_idx(path)


def test_idx_truncated_gzip_stream(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(5000, dtype=np.uint8).reshape(5000, 1) % 251))
    path = tmp_path / "cut-idx1-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RuntimeError, match="cut-idx1-ubyte.gz"):
        read_idx(path)


# --- MnistDataset on hand-made files -----------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_columns_types_and_usage(tmp_path, gz):
    root = make_mnist(tmp_path / "m", gz=gz)
    train = ds.MnistDataset(str(root), usage="train", shuffle=False)
    assert train.get_col_names() == ["image", "label"]
    assert train.get_dataset_size() == 6
    assert train.output_shapes() == [[28, 28, 1], []]
    assert train.output_types() == [np.uint8, np.uint32]
    first = rows(train)[0]
    assert first["image"].shape == (28, 28, 1) and first["label"].dtype == np.uint32
    assert [int(r["image"][0, 0, 0]) for r in rows(ds.MnistDataset(root, usage="test", shuffle=False))] == [6, 7, 8, 9]
    everything = ds.MnistDataset(root, shuffle=False)  # usage=None reads train then test
    assert [int(x[0, 0, 0]) for x in rows(everything, "image")] == list(range(10))
    assert ds.MnistDataset(root, usage="all", num_samples=3, shuffle=False).get_dataset_size() == 3


def test_mnist_missing_dir_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"folder .*nope does not exist"):
        ds.MnistDataset(str(tmp_path / "nope"))
    with pytest.raises(RuntimeError, match=r"train-images-idx3-ubyte.*train-labels-idx1-ubyte"):
        ds.MnistDataset(str(tmp_path), usage="train")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((1, 28, 28), np.uint8)))
    with pytest.raises(RuntimeError, match="t10k-labels-idx1-ubyte"):
        ds.MnistDataset(str(tmp_path), usage="all")
    with pytest.raises(ValueError, match="usage"):
        ds.MnistDataset(str(make_mnist(tmp_path / "ok")), usage="validation")


def test_mnist_bad_files(tmp_path):
    root = make_mnist(tmp_path / "m")
    write(root / "train-labels-idx1-ubyte", idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(RuntimeError, match="6 images.*5 labels"):
        ds.MnistDataset(str(root), usage="train")
    write(root / "train-labels-idx1-ubyte", b"\x00\x00\x99\x01")
    with pytest.raises(RuntimeError, match="bad magic"):
        ds.MnistDataset(str(root), usage="train")


# --- the embedded subset ---------------------------------------------------------------
def test_embedded_subset_contents():
    root = Path(ds.embedded_mnist_dir())
    assert (root / "README.md").read_text().count("Raschka") >= 1
    expected = {"train": (4000, 104646036, "52454974f5606fb1"), "t10k": (1000, 26621066, "05f16c885f80bb90")}
    for prefix, (count, pixel_sum, digest) in expected.items():
        images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
        assert images.shape == (count, 28, 28) and labels.shape == (count,)
        assert int(images.sum(dtype=np.int64)) == pixel_sum
        assert hashlib.sha256(images.tobytes()).hexdigest()[:16] == digest
        assert np.bincount(labels, minlength=10).tolist() == [count // 10] * 10  # all digits, balanced
    assert ds.MnistDataset(str(root), usage="train").get_dataset_size() == 4000
    assert ds.MnistDataset(str(root), usage="test").get_dataset_size() == 1000


def test_embedded_orientation_is_upright():
    images = rows(ds.MnistDataset(ds.embedded_mnist_dir(), usage="train", shuffle=False).take(10), "image")
    # Row 1 is a "1": ink spans more rows than columns (a transposed image would not).
    ink_rows, ink_cols = np.nonzero(images[1][:, :, 0] > 127)
    assert np.ptp(ink_rows) > 1.5 * np.ptp(ink_cols)
    # Row 7 is a "7": its widest stroke (the bar) is in the upper half (a flipped image would not be).
    width = (images[7][:, :, 0] > 127).sum(axis=1)
    assert int(np.argmax(width)) < 14


def test_none_dir_uses_embedded_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="distinfer.dataset"):
        data = ds.MnistDataset(None, usage="test")
    assert data.get_dataset_size() == 1000
    assert any("embedded" in r.getMessage() for r in caplog.records)


# --- the MindSpore sample pipeline -------------------------------------------------------
def sample_pipeline(usage: str = "train", batch_size: int = 32, **kwargs):
    data = ds.MnistDataset(ds.embedded_mnist_dir(), usage=usage, **kwargs)
    image_transforms = [ds.vision.Rescale(1.0 / 255.0, 0), ds.vision.Normalize(mean=(0.1307,), std=(0.3081,)),
                        ds.vision.HWC2CHW()]
    data = data.map(image_transforms, "image")
    data = data.map(ds.transforms.TypeCast(mstype.int32), "label")
    return data.batch(batch_size)


def test_sample_pipeline_train():
    data = sample_pipeline()
    assert data.get_dataset_size() == 125 and data.get_batch_size() == 32
    batches = list(data.create_tuple_iterator(output_numpy=True))
    assert len(batches) == 125
    image, label = batches[0]
    assert image.shape == (32, 1, 28, 28) and image.dtype == np.float32
    assert label.shape == (32,) and label.dtype == np.int32
    assert image.min() == pytest.approx(-0.1307 / 0.3081, rel=1e-5)
    assert image.max() == pytest.approx((1 - 0.1307) / 0.3081, rel=1e-5)
    labels = np.concatenate([b[1] for b in batches])
    assert np.bincount(labels).tolist() == [400] * 10
    assert data.output_shapes() == [[32, 1, 28, 28], [32]]


def test_sample_pipeline_last_partial_batch_and_drop_remainder():
    test = sample_pipeline("test")
    sizes = [b[0].shape[0] for b in test.create_tuple_iterator(output_numpy=True)]
    assert test.get_dataset_size() == len(sizes) == 32 and sizes[-1] == 1000 - 31 * 32
    dropped = ds.MnistDataset(ds.embedded_mnist_dir(), usage="test").batch(32, drop_remainder=True)
    assert dropped.get_dataset_size() == 31 == len(list(dropped.create_tuple_iterator(output_numpy=True)))


def test_iterators_wrap_tensors():
    from distinfer import tensor  # a plain import: a broken module must fail the test, not skip it
    image, label = next(sample_pipeline("test", shuffle=False).create_tuple_iterator())
    assert isinstance(image, tensor.Tensor) and isinstance(label, tensor.Tensor)
    assert image.asnumpy().shape == (32, 1, 28, 28) and label.asnumpy().dtype == np.int32
    want_image, want_label = next(sample_pipeline("test", shuffle=False).create_tuple_iterator(output_numpy=True))
    np.testing.assert_array_equal(image.asnumpy(), want_image)
    np.testing.assert_array_equal(label.asnumpy(), want_label)
    row = next(iter(ds.NumpySlicesDataset({"a": [1.5]})))
    assert isinstance(row[0], tensor.Tensor) and float(row[0].asnumpy()) == 1.5


# --- sharding and seeds ------------------------------------------------------------------
@pytest.mark.parametrize("shuffle", [False, None])
def test_shards_are_disjoint_and_cover(shuffle):
    ds.config.set_seed(3)
    shards = [rows(ds.MnistDataset(ds.embedded_mnist_dir(), usage="train", shuffle=shuffle,
                                   num_shards=4, shard_id=k).map(lambda img: img.sum(dtype=np.int64), "image"), "image")
              for k in range(4)]
    assert [len(s) for s in shards] == [1000] * 4
    # image sums stand in for row identity: compare against the unsharded multiset
    full = rows(ds.MnistDataset(ds.embedded_mnist_dir(), usage="train", shuffle=False)
                .map(lambda img: img.sum(dtype=np.int64), "image"), "image")
    assert sorted(int(x) for s in shards for x in s) == sorted(int(x) for x in full)


def test_shard_distribution_is_interleaved_and_padded():
    data = np.arange(10)
    shards = [[int(x) for x in rows(ds.NumpySlicesDataset(data, shuffle=False, num_shards=4, shard_id=k), "column_0")]
              for k in range(4)]
    assert shards == [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]  # MindSpore pads every shard to ceil(10/4)
    with pytest.raises(RuntimeError, match="num_shards and shard_id need to be specified together"):
        ds.NumpySlicesDataset(data, num_shards=4)
    with pytest.raises(RuntimeError, match=r"shard_id must be in \[0, 3\], got 4"):
        ds.NumpySlicesDataset(data, num_shards=4, shard_id=4)


def test_shuffle_is_deterministic_with_a_seed():
    def order():
        data = ds.NumpySlicesDataset(np.arange(50)).shuffle(8)
        return [int(x[0]) for x in data.create_tuple_iterator(output_numpy=True)]

    ds.config.set_seed(11)
    first, again = order(), order()
    assert first == again and sorted(first) == list(range(50)) and first != list(range(50))
    ds.config.set_seed(12)
    assert order() != first
    # The runtime's global seed applies when no dataset seed is set; config.set_seed wins over it.
    config._state["seed"] = None
    ds._set_global_seed(11)
    assert order() == first and ds.config.get_seed() == 11
    ds.config.set_seed(12)
    assert order() != first


def test_epochs_reshuffle_but_replay_with_the_seed():
    ds.config.set_seed(5)
    data = ds.MnistDataset(ds.embedded_mnist_dir(), usage="test").take(20)
    it = data.create_tuple_iterator(num_epochs=2, output_numpy=True)
    epoch0 = [int(l) for _, l in it]
    epoch1 = [int(l) for _, l in it]
    assert len(epoch0) == len(epoch1) == 20 and epoch0 != epoch1
    assert list(it) == []  # both epochs used up
    assert [int(l) for _, l in data.create_tuple_iterator(output_numpy=True)] == epoch0


# --- other sources -----------------------------------------------------------------------
def test_numpy_slices_input_kinds():
    as_dict = ds.NumpySlicesDataset({"a": [1, 2], "b": [[1, 2], [3, 4]]}, shuffle=False)
    assert as_dict.get_col_names() == ["a", "b"] and as_dict.output_shapes() == [[], [2]]
    as_tuple = ds.NumpySlicesDataset(([1, 2], [3, 4]), shuffle=False)
    assert as_tuple.get_col_names() == ["column_0", "column_1"]
    assert [[int(v) for v in r] for r in as_tuple.create_tuple_iterator(output_numpy=True)] == [[1, 3], [2, 4]]
    as_list = ds.NumpySlicesDataset([[1, 2], [3, 4]], column_names=["x"], shuffle=False)
    assert as_list.get_col_names() == ["x"] and as_list.output_shapes() == [[2]]
    assert ds.NumpySlicesDataset(np.zeros((7, 3), np.float32)).get_dataset_size() == 7
    with pytest.raises(ValueError, match=r"different lengths \[1, 2\]"):
        ds.NumpySlicesDataset({"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match=r"2 column names \['a', 'b'\] given for 1 columns"):
        ds.NumpySlicesDataset([1, 2], column_names=["a", "b"])


def test_generator_sources():
    def gen():
        for i in range(5):
            yield np.array([i, i]), i * 10

    data = ds.GeneratorDataset(gen, ["pair", "ten"])
    assert data.get_dataset_size() == 5  # counted by iterating, as MindSpore does
    assert [int(t) for _, t in data.create_tuple_iterator(output_numpy=True)] == [0, 10, 20, 30, 40]
    assert len(rows(ds.GeneratorDataset(gen, ["pair", "ten"], num_samples=2))) == 2

    class Source:
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return (np.float32(i),)

    ds.config.set_seed(1)
    shards = [rows(ds.GeneratorDataset(Source(), "v", num_shards=2, shard_id=k), "v") for k in range(2)]
    assert sorted(float(x) for s in shards for x in s) == [float(i) for i in range(8)]
    single = ds.GeneratorDataset([np.array([1, 2]), np.array([3, 4])], "v", shuffle=False)  # a list is random-access
    assert [r.tolist() for r in rows(single, "v")] == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match="shuffle.*random-access source"):
        ds.GeneratorDataset(gen, ["a", "b"], shuffle=True)
    with pytest.raises(RuntimeError, match="3 columns"):
        rows(ds.GeneratorDataset(gen, ["a", "b", "c"]))


# --- pipeline operations -----------------------------------------------------------------
def test_map_multi_output_project_rename_take_skip_repeat():
    base = ds.NumpySlicesDataset({"x": np.arange(6), "y": np.arange(6) * 2}, shuffle=False)
    split = base.map(lambda x: (x, -x), input_columns="x", output_columns=["pos", "neg"])
    assert split.get_col_names() == ["pos", "neg", "y"]
    first = next(split.create_dict_iterator(output_numpy=True))
    assert (int(first["pos"]), int(first["neg"]), int(first["y"])) == (0, 0, 0)
    pipeline = split.project(["y", "neg"]).rename("neg", "minus").skip(1).take(3).repeat(2)
    assert pipeline.get_col_names() == ["y", "minus"] and pipeline.get_dataset_size() == 6
    assert [int(r[0]) for r in pipeline.create_tuple_iterator(output_numpy=True)] == [2, 4, 6] * 2
    with pytest.raises(ValueError, match=r"input columns \['z'\] are not in the dataset columns \['x', 'y'\]"):
        base.map(lambda z: z, "z")
    composed = base.map(ds.transforms.Compose([lambda x: x + 1, ds.transforms.TypeCast(np.float16)]), "x")
    assert composed.output_types() == [np.float16, np.int64]


def test_batch_rejects_ragged_rows():
    data = ds.GeneratorDataset([np.zeros(2), np.zeros(3)], "v", shuffle=False).batch(2)
    with pytest.raises(RuntimeError, match="different shapes"):
        list(data.create_tuple_iterator(output_numpy=True))


def test_vision_ops():
    img = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    chw = ds.vision.HWC2CHW()(img)
    assert chw.shape == (3, 2, 4) and chw[1, 0, 1] == img[0, 1, 1]
    norm = ds.vision.Normalize(mean=(1, 2, 3), std=(1, 2, 4), is_hwc=False)(chw)
    np.testing.assert_allclose(norm[2], (img[..., 2].astype(np.float32) - 3) / 4)
    assert norm.dtype == np.float32
    resized = ds.vision.Resize((4, 8))(np.full((2, 4, 1), 9, np.uint8))
    assert resized.shape == (4, 8, 1) and resized.dtype == np.uint8 and (resized == 9).all()
    assert ds.vision.Resize(14)(np.zeros((28, 56), np.uint8)).shape == (14, 28)
    # Values, by hand: bilinear with half-pixel centres (edges clamped), and nearest.
    ramp = np.array([[0, 10]], np.float32)[..., None]
    assert ds.vision.Resize((1, 4))(ramp)[..., 0].tolist() == [[0.0, 2.5, 7.5, 10.0]]
    assert ds.vision.Resize((1, 4), ds.vision.Inter.NEAREST)(ramp)[..., 0].tolist() == [[0.0, 0.0, 10.0, 10.0]]
    square = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    assert ds.vision.Resize((2, 2))(square)[..., 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]  # 2x2 means


def test_split():
    ds.config.set_seed(2)
    train, test = ds.MnistDataset(ds.embedded_mnist_dir(), usage="test", shuffle=False).split([0.9, 0.1])
    assert (train.get_dataset_size(), test.get_dataset_size()) == (900, 100)
    a, b = ds.NumpySlicesDataset(np.arange(100)).split([0.7, 0.3])
    seen_a, seen_b = ([int(x) for x in rows(part, "column_0")] for part in (a, b))
    assert len(seen_a) == 70 and sorted(seen_a + seen_b) == list(range(100)) and seen_a != sorted(seen_a)
    first, rest = ds.NumpySlicesDataset(np.arange(5), shuffle=False).split([2, 3], randomize=False)
    assert [int(x) for x in rows(rest, "column_0")] == [2, 3, 4]
    with pytest.raises(ValueError, match=r"split sizes \[2, 2\] must be positive and sum to the dataset size 5"):
        ds.NumpySlicesDataset(np.arange(5)).split([2, 2])
