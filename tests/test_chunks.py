"""cache/chunks.py: chunks encoded in parallel are the bytes HDF5's own filters would store."""

from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest

from neuron_tui.cache import chunks, writer


def reference_fletcher32(data: bytes) -> int:
    """H5_checksum_fletcher32 (H5checksum.c) transcribed line by line, in plain Python."""
    n, s1, s2, i = len(data) // 2, 0, 0, 0
    while n:
        t = min(n, 360)
        n -= t
        for _ in range(t):
            s1 += (data[i] << 8) | data[i + 1]
            i += 2
            s2 += s1
        s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    if len(data) % 2:
        s1 += data[i] << 8
        s2 += s1
        s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    return (s2 << 16) | s1


@pytest.mark.parametrize("kind", ["random", "ones", "sparse", "zeros"])
def test_fletcher32_equals_the_c_algorithm(kind):
    rng = np.random.default_rng(0)
    for n in list(range(0, 9)) + rng.integers(9, 2500, 60).tolist() + [720, 721, 722]:
        data = {"random": rng.integers(0, 256, n, dtype=np.uint8).tobytes(), "ones": b"\xff" * n,
                "sparse": rng.choice(np.array([0, 255], np.uint8), n).tobytes(), "zeros": bytes(n)}[kind]
        assert chunks.fletcher32(data) == reference_fletcher32(data), (kind, n)


def dataset(f, name, shape, dtype):
    return f.create_dataset(name, shape=shape, dtype=dtype, **writer.dataset_layout(name, shape))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.float32, np.int8])
def test_a_layer_written_directly_reads_back_and_matches_hdf5s_own_chunks(tmp_path, dtype):
    rng = np.random.default_rng(1)
    shape = (3, 40, 2500)  # the last chunk of each layer is an edge chunk (2500 = 2 x 1024 + 452)
    data = (rng.normal(size=shape) * 50).astype(dtype)
    with h5py.File(tmp_path / "x.h5", "w", libver="latest") as f:
        ours, theirs = dataset(f, "ours", shape, dtype), dataset(f, "theirs", shape, dtype)
        for layer in range(shape[0]):
            assert chunks.direct_layout(ours, layer, data[layer])
            chunks.write_layer(ours, layer, data[layer])
            theirs[layer] = data[layer]
    with h5py.File(tmp_path / "x.h5", "r") as f:  # h5py verifies every chunk's fletcher32 as it reads
        np.testing.assert_array_equal(f["ours"][()], data)
        for offset in ((0, 0, 0), (2, 0, 2048)):
            _, mine = f["ours"].id.read_direct_chunk(offset)
            _, hdf5 = f["theirs"].id.read_direct_chunk(offset)
            # HDF5's checksum of its own compressed bytes is ours; the shuffled bytes are the same
            assert int.from_bytes(hdf5[-4:], "little") == chunks.fletcher32(hdf5[:-4])
            assert zlib.decompress(mine[:-4]) == zlib.decompress(hdf5[:-4])


def test_a_damaged_direct_chunk_is_caught_on_read(tmp_path):
    data = np.arange(2 * 16 * 1024, dtype=np.int32).reshape(2, 16, 1024)
    with h5py.File(tmp_path / "x.h5", "w", libver="latest") as f:
        ds = dataset(f, "pos_count", data.shape, np.int32)
        blob = bytearray(chunks.encode(data[0], 1))
        blob[len(blob) // 2] ^= 0x10
        ds.id.write_direct_chunk((0, 0, 0), bytes(blob))
        chunks.write_layer(ds, 1, data[1])
    with h5py.File(tmp_path / "x.h5", "r") as f:
        np.testing.assert_array_equal(f["pos_count"][1], data[1])
        with pytest.raises(OSError):
            f["pos_count"][0]


def test_only_whole_layers_of_the_summary_layout_go_direct(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = dataset(f, "pos_count", (2, 8, 4096), np.int32)
        assert chunks.direct_layout(ds, 0, np.zeros((8, 4096), np.int32))
        assert not chunks.direct_layout(ds, slice(0, 1), np.zeros((1, 8, 4096), np.int32))
        assert not chunks.direct_layout(ds, 0, np.zeros((8, 100), np.int32))
        small = dataset(f, "tau", (24,), np.float32)  # too small to compress
        assert not chunks.direct_layout(small, 0, np.zeros((), np.float32))
        plain = f.create_dataset("plain", shape=(2, 4096), dtype=np.int32, chunks=(1, 1024), compression="lzf")
        assert not chunks.direct_layout(plain, 0, np.zeros(4096, np.int32))


def test_appends_of_any_length_read_back_whole(tmp_path):
    """Appends that start and end inside chunks, span several, or fill one exactly."""
    rng = np.random.default_rng(2)
    with h5py.File(tmp_path / "x.h5", "w", libver="latest") as f:
        ds = f.create_dataset("event_pos", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1000,),
                              fletcher32=True, compression="gzip", compression_opts=1, shuffle=True)
        parts = [rng.integers(0, 10**9, n).astype(np.int32) for n in (5, 995, 1000, 2500, 1, 3999, 0, 7000, 3)]
        for part in parts:
            if len(part):
                chunks.append(ds, part)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        np.testing.assert_array_equal(f["event_pos"][()], np.concatenate(parts))
