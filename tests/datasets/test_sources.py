"""`list_images`: folders walked recursively by extension, list files, clear errors."""

import os

import pytest

from rlx.datasets import list_images
from rlx.errors import InputError


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def test_folder_is_walked_recursively_sorted_by_key_skipping_hidden_and_other_files(tmp_path):
    for name in ["b.PNG", "a.jpg", "sub/c.webp", "sub/deep/d.tif", "sub/e.tiff", "f.bmp",
                 "g.jpeg", "notes.txt", ".hidden.png", ".cache/x.png", "sub/.y.jpg"]:
        touch(str(tmp_path / name))
    items = list_images(tmp_path)
    assert [it.key for it in items] == ["a.jpg", "b.PNG", "f.bmp", "g.jpeg", "sub/c.webp",
                                        "sub/deep/d.tif", "sub/e.tiff"]
    assert all(os.path.isabs(it.path) and os.path.isfile(it.path) for it in items)


def test_list_file_keeps_order_resolves_relative_paths_and_skips_comments(tmp_path):
    touch(str(tmp_path / "imgs" / "x.png"))
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my images\nimgs/x.png\n\n  ./imgs/missing.jpg  \n{tmp_path}/abs.png\n")
    items = list_images(lst)
    assert [it.key for it in items] == ["imgs/x.png", "imgs/missing.jpg", f"{tmp_path}/abs.png"]
    assert items[0].path == str(tmp_path / "imgs" / "x.png")
    assert items[1].path == str(tmp_path / "imgs" / "missing.jpg")  # a per-image error later


@pytest.mark.parametrize("case", ["missing", "empty folder", "empty list", "duplicate",
                                  "an image"])
def test_bad_sources_are_one_clear_error(tmp_path, case):
    if case == "missing":
        src, msg = tmp_path / "nope", "no such folder or image list"
    elif case == "empty folder":
        (tmp_path / "d").mkdir()
        touch(str(tmp_path / "d" / "readme.txt"))
        src, msg = tmp_path / "d", "no images (jpg, jpeg, png"
    elif case == "empty list":
        src, msg = tmp_path / "l.txt", "names no images"
        src.write_text("# nothing\n\n")
    elif case == "duplicate":
        src, msg = tmp_path / "l.txt", "l.txt:3: 'a.png' is listed twice (first on line 1)"
        src.write_text("a.png\nb.png\na.png\n")
    else:
        src, msg = tmp_path / "a.png", "is an image; give the folder"
        touch(str(src))
    with pytest.raises(InputError) as e:
        list_images(src)
    assert msg in str(e.value)
