"""The work folder (atomic per-item outcomes, reuse rules, settings check) and the progress bar."""

import io
import json
import os

import pytest

from rlx.datasets import Item, WorkDir
from rlx.utils.progress import Progress, format_duration
from rlx.datasets.workdir import work_dir_for
from rlx.errors import InputError


def ok(item, **result):
    return {"key": item.key, "digest": item.digest, "ok": True, "result": result}


def test_outcomes_are_reused_only_when_ok_and_the_payload_is_unchanged(tmp_path):
    w = WorkDir(tmp_path / "a.work")
    w.open({"model": "m"})
    a, b, c = Item("a.png", "/x/a.png", {"p": 1}), Item("b.png", "/x/b.png"), Item("c", "/c")
    w.write(ok(a, n=1))
    w.write({"key": b.key, "digest": b.digest, "ok": False, "error": "corrupt"})
    assert set(w.finished([a, b, c])) == {"a.png"}  # the failed one is tried again
    assert w.read(Item("a.png", "/x/a.png", {"p": 2})) is None  # its prompts changed
    # nothing but complete files: no temp files left behind
    names = os.listdir(tmp_path / "a.work" / "items")
    assert len(names) == 2 and all(n.endswith(".json") and not n.startswith(".") for n in names)
    # a damaged file (not ours) means: redo the item
    for n in names:
        (tmp_path / "a.work" / "items" / n).write_text("{trunc")
    assert w.finished([a, b]) == {}


def test_an_image_replaced_under_the_same_name_is_not_reused(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"first")
    w = WorkDir(tmp_path / "a.work")
    w.open({"model": "m"})
    item = Item("a.png", str(img))
    w.write(ok(item, n=1))
    assert set(w.finished([item])) == {"a.png"}
    img.write_bytes(b"second, longer")
    os.utime(img, ns=(1, 1))
    assert w.finished([item]) == {}


def test_a_work_folder_made_with_other_settings_is_refused(tmp_path):
    WorkDir(tmp_path / "w").open({"model": "vit_b", "mode": "prompts"})
    WorkDir(tmp_path / "w").open({"mode": "prompts", "model": "vit_b"})  # same: fine
    with pytest.raises(InputError) as e:
        WorkDir(tmp_path / "w").open({"model": "vit_h", "mode": "prompts"})
    assert "other settings (differing: model)" in str(e.value) and "delete the folder" in str(
        e.value)
    assert json.loads((tmp_path / "w" / "settings.json").read_text())["model"] == "vit_b"


def test_work_dir_sits_next_to_the_output():
    assert str(work_dir_for("/data/out/annotations.json")) == "/data/out/annotations.work"


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_on_a_terminal_only_and_shows_rate_eta_errors():
    quiet = io.StringIO()
    p = Progress(4, stream=quiet)
    p.update(True)
    p.close()
    assert quiet.getvalue() == ""

    tty = Tty()
    p = Progress(10, done=4, label="annotate", stream=tty)
    p.t0 -= 2.0  # pretend two seconds passed
    p.update(True)
    p.update(False)
    line = p.line()
    assert "annotate [" in line and "6/10 images" in line and "errors 1" in line
    rate = float(line.split("  ")[1].rstrip("/s"))
    assert 0.5 < rate <= 1.0  # 2 images in ~2 s: the 4 reused ones do not count
    assert "ETA 0:0" in line
    p.close()
    assert tty.getvalue().startswith("\r") and tty.getvalue().endswith("\n")


def test_format_duration():
    assert format_duration(59.6) == "1:00"
    assert format_duration(3725) == "1:02:05"
