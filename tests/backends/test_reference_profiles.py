"""Compile profiles: presets, TOML/JSON files (errors name the file and the key),
``base =`` presets, and the profile stored next to a checkpoint."""

from __future__ import annotations

import json

import pytest

from rlx.errors import ProfileError
from rlx.runtime import (PRESETS, CompileProfile, load_profile_file, profile_near_weights,
                         resolve_profile)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_by_name(name):
    p = resolve_profile(name)
    assert p == PRESETS[name] and p.source == name and p.name == name


def test_preset_contents():
    assert PRESETS["debug"].verify and not PRESETS["debug"].fusion
    assert PRESETS["debug"].attention == "decomposed"
    assert PRESETS["fast"].fastmath and not PRESETS["default"].fastmath
    assert PRESETS["numba"].backend == "numba" and PRESETS["llvm"].backend == "llvm"
    assert PRESETS["reference"].backend == "reference"


def test_unknown_preset_name():
    with pytest.raises(ProfileError, match="unknown profile 'turbo'.*default, debug"):
        resolve_profile("turbo")


def test_toml_file_with_base_preset(tmp_path):
    p = tmp_path / "tuned.toml"
    p.write_text('base = "debug"\nthreads = 2\nattention_block = 64\ncache_dir = "/tmp/k"\n')
    prof = load_profile_file(p)
    assert prof.name == "tuned" and prof.source == str(p)
    assert prof.threads == 2 and prof.attention_block == 64 and prof.cache_dir == "/tmp/k"
    assert prof.verify and not prof.fusion  # inherited from debug
    assert resolve_profile(str(p)) == prof


def test_toml_profile_table_and_explicit_name(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text('[profile]\nname = "mine"\nbackend = "reference"\nfastmath = true\n')
    prof = load_profile_file(p)
    assert prof.name == "mine" and prof.fastmath
    # everything else comes from the default preset
    assert prof.replace(fastmath=False, name="default", backend=PRESETS["default"].backend) \
        == PRESETS["default"]


def test_json_file_round_trips_a_profile(tmp_path):
    original = PRESETS["fast"].replace(threads=3, attention="decomposed", name="rt")
    p = tmp_path / "rt.json"
    p.write_text(json.dumps(original.to_dict()))
    assert load_profile_file(p) == original  # to_dict includes cache_dir = null


@pytest.mark.parametrize("suffix,text,fragments", [
    (".toml", "threads = 2\nturbo = true\n", ["unknown setting(s) turbo"]),
    (".json", '{"threads": 2, "gpu": 1, "tiles": 4}', ["unknown setting(s) gpu, tiles"]),
    (".toml", 'threads = "two"\n', ["threads must be int", "'two'"]),
    (".toml", "threads = true\n", ["threads must be int"]),
    (".toml", 'fusion = "yes"\n', ["fusion must be bool"]),
    (".json", '{"fusion": 1}', ["fusion must be bool"]),
    (".toml", "backend = 3\n", ["backend must be str"]),
    (".json", '{"cache_dir": 5}', ["cache_dir must be str"]),
    (".json", '{"name": ["a"]}', ["name must be str"]),
    (".toml", 'backend = "cuda"\n', ["unknown backend 'cuda'"]),
    (".toml", 'device = "tpu"\n', ["unknown device 'tpu'"]),
    (".toml", 'gemm = "fast"\n', ["gemm must be 'blas' or 'native'"]),
    (".toml", 'attention = "flash"\n', ["attention must be"]),
    (".toml", "threads = -1\n", ["threads >= 0"]),
    (".toml", "attention_block = 0\n", ["attention_block > 0"]),
    (".toml", 'base = "turbo"\n', ["unknown base preset 'turbo'"]),
    (".json", '{"base": ["debug"]}', ["base must be a preset name"]),
    (".toml", "threads = \n", ["is malformed"]),
    (".json", "{threads: 1}", ["is malformed"]),
    (".json", "[1, 2]", ["expected a table of settings"]),
    (".json", '{"source": "x"}', ["unknown setting(s) source"]),
])
def test_bad_profile_files_name_the_file_and_the_problem(tmp_path, suffix, text, fragments):
    p = tmp_path / f"bad{suffix}"
    p.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile_file(p)
    msg = str(info.value)
    assert str(p) in msg, msg
    for f in fragments:
        assert f in msg, msg
    assert "\n" not in msg


def test_unsupported_suffix_missing_file_and_bad_encoding(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("threads: 1\n")
    with pytest.raises(ProfileError, match=r"p\.yaml: use a \.toml or \.json file"):
        load_profile_file(y)
    with pytest.raises(ProfileError, match=r"cannot read profile file .*nope\.toml"):
        load_profile_file(tmp_path / "nope.toml")
    with pytest.raises(ProfileError, match=r"cannot read profile file .*nope\.toml"):
        resolve_profile(str(tmp_path / "nope.toml"))
    b = tmp_path / "b.toml"
    b.write_bytes(b"threads = \xff\n")
    with pytest.raises(ProfileError, match=r"b\.toml is malformed"):
        load_profile_file(b)


def test_profile_near_weights_lookup_order(tmp_path):
    ckpt = tmp_path / "sam_vit_b_01ec64.pth"
    ckpt.write_bytes(b"")
    assert profile_near_weights(ckpt) == PRESETS["default"]
    assert profile_near_weights(ckpt).source == "default"
    assert profile_near_weights(None) == PRESETS["default"]

    (tmp_path / "rlx-profile.json").write_text('{"threads": 4}')
    assert profile_near_weights(ckpt).threads == 4
    (tmp_path / "rlx-profile.toml").write_text("threads = 3\n")
    assert profile_near_weights(ckpt).threads == 3
    (tmp_path / "sam_vit_b_01ec64.rlx.json").write_text('{"threads": 2}')
    assert profile_near_weights(ckpt).threads == 2
    (tmp_path / "sam_vit_b_01ec64.rlx.toml").write_text("threads = 1\n")
    near = profile_near_weights(ckpt)
    assert near.threads == 1 and near.name == "sam_vit_b_01ec64.rlx"
    assert near.source == str(tmp_path / "sam_vit_b_01ec64.rlx.toml")
    # a checkpoint with several suffixes uses the part before the first dot
    assert profile_near_weights(tmp_path / "sam_vit_b_01ec64.fp16.safetensors").threads == 1
    # resolve_profile(None, checkpoint) means "whatever is stored next to the weights"
    assert resolve_profile(None, ckpt) == near
    # an explicit preset wins over the file next to the weights
    assert resolve_profile("debug", ckpt) == PRESETS["debug"]


def test_broken_profile_next_to_weights_is_an_error_naming_it(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    bad = tmp_path / "m.rlx.toml"
    bad.write_text("threads = 1\nwarp = 9\n")
    with pytest.raises(ProfileError, match=r"m\.rlx\.toml: unknown setting\(s\) warp"):
        profile_near_weights(ckpt)


def test_constructing_invalid_profiles_directly():
    with pytest.raises(ProfileError, match="unknown backend 'gpu'"):
        CompileProfile(backend="gpu")
    with pytest.raises(ProfileError, match="unknown device"):
        PRESETS["default"].replace(device="arm")
    assert PRESETS["default"].replace(threads=0).effective_threads >= 1
