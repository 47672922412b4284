"""Data movement ops against torch, explicit index arithmetic, and Meta's official
`window_partition` / `window_unpartition`."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlx.errors import InputError
from rlx.ir import GraphBuilder, print_graph
from tests.support import torchvision_shim
from tests.support.opcheck import covers, op_graph, rand, run_op

torchvision_shim.install()
from segment_anything.modeling.image_encoder import (  # noqa: E402
    window_partition, window_unpartition)

RNG = np.random.default_rng(3)


@covers("reshape")
@pytest.mark.parametrize("src,shape,want", [
    ((2, 3, 4), (4, -1), (4, 6)), ((2, 3, 4), (24,), (24,)), ((6,), (1, 2, 1, 3), (1, 2, 1, 3)),
    ((1,), (), ()), ((), (1, 1), (1, 1)), ((0, 3), (3, 0), (3, 0)), ((0, 3), (0, 1, 3), (0, 1, 3)),
])
def test_reshape_is_row_major(src, shape, want):
    x = rand(RNG, src)
    got = run_op("reshape", x, shape=shape)
    np.testing.assert_array_equal(got, torch.from_numpy(x).reshape(want).numpy())
    assert op_graph("reshape", [x], {"shape": shape}).nodes[0].attrs["shape"] == want


@covers("transpose")
@pytest.mark.parametrize("src,perm", [((2, 3, 4), (2, 0, 1)), ((2, 3, 4), (-1, 0, -2)),
                                      ((5,), (0,)), ((1, 4, 1, 3), (3, 2, 1, 0))])
def test_transpose_matches_torch_permute(src, perm):
    x = rand(RNG, src)
    got = run_op("transpose", x, perm=perm)
    np.testing.assert_array_equal(got, torch.from_numpy(x).permute(*perm).numpy())
    assert got.flags.c_contiguous


@covers("pad")
@pytest.mark.parametrize("src,pads,value", [
    ((2, 3), (1, 0, 2, 3), 0.0), ((1, 2, 3, 4), (0, 0, 0, 0, 1, 1, 2, 0), -1.5),
    ((3,), (0, 0), 7.0), ((0, 2), (1, 1, 0, 0), 2.0),
])
def test_pad_matches_torch(src, pads, value):
    x = rand(RNG, src)
    got = run_op("pad", x, pads=pads, value=value)
    # torch lists (before, after) pairs from the LAST dim backwards
    tpads = [p for i in reversed(range(len(src))) for p in (pads[2 * i], pads[2 * i + 1])]
    want = F.pad(torch.from_numpy(x), tpads, mode="constant", value=value).numpy()
    np.testing.assert_array_equal(got, want)


def _slice_by_indices(x, starts, ends, steps):
    """Independent slicing: explicit index lists per axis with clamping spelled out."""
    out = x
    for axis, (s, e, st) in enumerate(zip(starts, ends, steps)):
        n = x.shape[axis]
        s = min(max(s + n if s < 0 else s, 0), n)
        e = min(max(e + n if e < 0 else e, 0), n)
        idx = list(range(s, e, st))
        out = np.take(out, np.array(idx, dtype=np.int64), axis=axis)
    return out


@covers("slice")
@pytest.mark.parametrize("src,starts,ends,steps", [
    ((5, 6), (1, -4), (5, 100), (2, 3)),
    ((7,), (0,), (7,), (3,)),
    ((4, 4), (-100, 2), (2, -1), (1, 1)),
    ((4, 4), (3, 0), (1, 4), (1, 1)),       # start past end: empty
    ((2, 9, 3), (0, 1, 0), (2, 9, 3), (1, 4, 2)),
    ((1, 1), (0, 0), (1, 1), (5, 5)),
])
def test_slice_with_steps_and_clamping(src, starts, ends, steps):
    x = rand(RNG, src)
    got = run_op("slice", x, starts=starts, ends=ends, steps=steps)
    np.testing.assert_array_equal(got, _slice_by_indices(x, starts, ends, steps))


@covers("slice")
def test_slice_defaults_take_everything_and_attrs_are_canonical():
    x = rand(RNG, (3, 4))
    np.testing.assert_array_equal(run_op("slice", x, ends=(2, 4)), x[:2])
    node = op_graph("slice", [x], {"starts": (-2, 0), "ends": (100, 3)}).nodes[0]
    assert node.attrs == {"starts": (1, 0), "ends": (3, 3), "steps": (1, 1)}


@covers("concat")
@pytest.mark.parametrize("shapes,axis", [([(2, 3), (2, 1), (2, 2)], -1), ([(1, 4), (3, 4)], 0),
                                         ([(2, 0, 3), (2, 2, 3)], 1), ([(5,)], 0)])
def test_concat_matches_torch_cat(shapes, axis):
    xs = [rand(RNG, s) for s in shapes]
    got = run_op("concat", *xs, axis=axis)
    np.testing.assert_array_equal(got, torch.cat([torch.from_numpy(x) for x in xs],
                                                 dim=axis).numpy())


@covers("broadcast_to")
@pytest.mark.parametrize("src,shape", [((3, 1), (2, 3, 4)), ((), (2, 2)), ((4,), (4,)),
                                       ((1, 1), (0, 5))])
def test_broadcast_to_matches_torch(src, shape):
    x = rand(RNG, src)
    got = run_op("broadcast_to", x, shape=shape)
    np.testing.assert_array_equal(got, torch.broadcast_to(torch.from_numpy(x), shape).numpy())
    assert got.flags.c_contiguous


@covers("window_partition", "window_unpartition")
@pytest.mark.parametrize("b,h,w,c,ws", [(1, 8, 8, 3, 4), (2, 5, 7, 2, 3), (1, 14, 14, 4, 14),
                                        (1, 3, 3, 1, 4), (2, 1, 9, 2, 2), (1, 64, 64, 2, 14)])
def test_windows_match_official_functions(b, h, w, c, ws):
    x = rand(RNG, (b, h, w, c))
    got = run_op("window_partition", x, window=ws)
    want, pad_hw = window_partition(torch.from_numpy(x), ws)
    np.testing.assert_array_equal(got, want.numpy())

    y = rand(RNG, got.shape)  # unpartition arbitrary window contents, not just a round trip
    back = run_op("window_unpartition", y, window=ws, height=h, width=w)
    np.testing.assert_array_equal(back, window_unpartition(torch.from_numpy(y), ws, pad_hw,
                                                           (h, w)).numpy())
    np.testing.assert_array_equal(run_op("window_unpartition", got, window=ws, height=h,
                                         width=w), x)


@covers("gather")
@pytest.mark.parametrize("table,idx,axis", [((5, 3), (2, 4), 0), ((3, 6, 2), (7,), 1),
                                            ((4,), (), 0), ((4, 2), (0,), 0),
                                            ((27, 8), (14, 14), 0), ((3, 6, 2), (), 1),
                                            ((3, 6, 2), (2, 3), -1), ((5, 3), (4,), -2)])
@pytest.mark.parametrize("idt", [np.int32, np.int64])
@pytest.mark.parametrize("negative", [False, True], ids=["from-start", "from-end"])
def test_gather_matches_torch_index_select(table, idx, axis, idt, negative):
    t = rand(RNG, table)
    n = table[axis]
    i = RNG.integers(0, n, idx).astype(idt)
    # from-end: the same rows named by negative indices (-n .. -1), as numpy and torch allow
    named = np.asarray(i - n if negative else i, dtype=idt)  # stays an array when rank 0
    got = run_op("gather", t, named, axis=axis)
    ax = axis % len(table)
    flat = torch.index_select(torch.from_numpy(t), ax, torch.from_numpy(i.reshape(-1)).long())
    want = flat.reshape(table[:ax] + idx + table[ax + 1:]).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, np.take(t, named, axis=axis))


@covers("gather")
@pytest.mark.parametrize("bad", [3, -4, 100])
def test_gather_out_of_range_index_is_an_error(bad):
    with pytest.raises(InputError, match=rf"gather: index {bad} out of range for axis 0 of "
                                         r"extent 3 \(valid: -3 \.\. 2"):
        run_op("gather", rand(RNG, (3, 2)), np.array([0, bad, -3], np.int64))


def test_gather_axis_is_stored_non_negative():
    b = GraphBuilder("g")
    out = b.gather(b.input("t", (3, 6, 2)), b.input("i", (4,), "i64"), axis=-2)
    assert out.producer.attrs == {"axis": 1} and out.shape == (3, 4, 2)
    b.output(out)
    assert "axis=1" in print_graph(b.build())


@covers("arange")
@pytest.mark.parametrize("start,stop,step,dtype", [(0, 5, 1, "i64"), (2, 11, 3, "i32"),
                                                   (5, -4, -2, "i64"), (3, 3, 1, "f32"),
                                                   (4, 0, 1, "i64"), (-3, 3, 2, "f32")])
def test_arange_matches_python_range(start, stop, step, dtype):
    got = run_op("arange", start=start, stop=stop, step=step, dtype=dtype)
    npdt = {"i64": np.int64, "i32": np.int32, "f32": np.float32}[dtype]
    want = np.array(list(range(start, stop, step)), dtype=npdt)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@covers("im2col")
def test_im2col_column_order_is_channel_then_kernel_row_then_col():
    x = np.arange(2 * 3 * 3, dtype=np.float32).reshape(1, 2, 3, 3)
    got = run_op("im2col", x, kernel=(2, 2))
    for c, i, j in itertools.product(range(2), range(2), range(2)):
        for oy, ox in itertools.product(range(2), range(2)):
            assert got[0, c * 4 + i * 2 + j, oy * 2 + ox] == x[0, c, oy + i, ox + j]


@covers("transpose", "slice", "broadcast_to", "reshape")
def test_rank_zero_tensors_stay_rank_zero():
    x = np.array(2.5, np.float32)
    assert run_op("transpose", x, perm=()).shape == ()
    assert run_op("slice", x).shape == ()
    assert run_op("broadcast_to", x, shape=()).shape == ()
    assert run_op("reshape", np.ones((1, 1), np.float32), shape=()).shape == ()
