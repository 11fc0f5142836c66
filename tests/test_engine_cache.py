"""The engine cache: a key that moves with everything an engine depends on, and no stale,
foreign, truncated or corrupt engine ever handed to TensorRT (it is rebuilt, with a warning).

The builder is replaced by a counter here, so these run without TensorRT; the real builds
are in test_tensorrt_build.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
from pathlib import Path

import pytest
import torch

from vs_skipsr import export
from vs_skipsr.export import (
    BuiltEngine,
    EngineCache,
    KeyParts,
    ProfileSpec,
    default_engine_dir,
    engine_cache_key,
    onnx_digest,
    prepare_engines,
    profiles_json,
)
from vs_skipsr.models.mask import MaskConfig, MaskNet
from vs_skipsr.models.sr import PRESETS, SRTransformer

PARTS = KeyParts(
    onnx_sha256="0" * 64,
    trt_module="tensorrt_rtx_bindings",
    trt_version="1.7.1.116",
    gpu="cpu-build",
    profiles=profiles_json(ProfileSpec().sr_profiles()),
    precision="fp16",
)


class CountingBuilder:
    """Stands in for the TensorRT build: counts calls, returns recognisable bytes."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, onnx_path: Path | None = None, **_: object) -> BuiltEngine:
        self.calls += 1
        data = f"engine #{self.calls} of {Path(onnx_path or 'x').name}".encode() * 100
        return BuiltEngine(
            data=data,
            inputs={},
            outputs={},
            num_profiles=3,
            seconds=0.0,
            trt_module="fake",
            trt_version="0",
            strongly_typed=True,
        )


def _changed(parts: KeyParts, name: str) -> KeyParts:
    value = getattr(parts, name)
    return dataclasses.replace(parts, **{name: value + "x"})


@pytest.mark.parametrize("part", [f.name for f in dataclasses.fields(KeyParts)])
def test_cache_key_changes_when_any_part_changes(part):
    assert engine_cache_key(_changed(PARTS, part)) != engine_cache_key(PARTS)


def test_cache_key_is_stable():
    assert engine_cache_key(PARTS) == engine_cache_key(dataclasses.replace(PARTS))
    assert len(engine_cache_key(PARTS)) == 64


def test_profile_part_follows_the_profile_spec():
    base = ProfileSpec()
    for change in (
        {"buckets": (0.2, 0.5, 1.0)},
        {"height": 720},
        {"frames": 3},
        {"window": (4, 8, 8)},
    ):
        other = dataclasses.replace(base, **change)
        assert profiles_json(other.sr_profiles()) != profiles_json(base.sr_profiles()), change
    assert profiles_json(base.mask_profiles()) != profiles_json(
        dataclasses.replace(base, scale=4).mask_profiles()
    )


def test_onnx_part_follows_the_weights(tmp_path):
    net = SRTransformer(PRESETS["tiny"]).eval()
    export.export_sr_onnx(net, tmp_path / "a.onnx")
    with torch.no_grad():
        net.final.convs[-1].bias.add_(1e-3)
    export.export_sr_onnx(net, tmp_path / "b.onnx")
    assert onnx_digest(tmp_path / "a.onnx") != onnx_digest(tmp_path / "b.onnx")


def test_store_then_load_round_trips(tmp_path):
    cache = EngineCache(tmp_path)
    key = engine_cache_key(PARTS)
    path = cache.store(name="sr-fp16", key=key, data=b"abc" * 1000, info={"parts": PARTS.to_dict()})
    assert path.is_file() and path.name.startswith("sr-fp16-" + key[:16])
    assert cache.load(name="sr-fp16", key=key) == b"abc" * 1000
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["key"] == key and meta["size"] == 3000 and meta["parts"]["precision"] == "fp16"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    assert [e.engine for e in cache.entries()] == [path]


def _tamper_truncate(engine: Path, meta: Path) -> None:
    data = engine.read_bytes()
    engine.write_bytes(data[: len(data) // 2])


def _tamper_flip(engine: Path, meta: Path) -> None:
    data = bytearray(engine.read_bytes())
    data[10] ^= 0xFF
    engine.write_bytes(bytes(data))


def _tamper_foreign(engine: Path, meta: Path) -> None:
    m = json.loads(meta.read_text())
    m["key"] = "f" * 64  # an engine copied from another machine under this name
    meta.write_text(json.dumps(m))


def _tamper_no_sidecar(engine: Path, meta: Path) -> None:
    meta.unlink()


def _tamper_bad_sidecar(engine: Path, meta: Path) -> None:
    meta.write_text("{not json")


@pytest.mark.parametrize(
    "tamper",
    [_tamper_truncate, _tamper_flip, _tamper_foreign, _tamper_no_sidecar, _tamper_bad_sidecar],
    ids=["truncated", "corrupt", "foreign-key", "no-sidecar", "bad-sidecar"],
)
def test_bad_engine_is_rebuilt_with_a_warning(tmp_path, caplog, tamper):
    cache = EngineCache(tmp_path)
    key = engine_cache_key(PARTS)
    build = CountingBuilder()
    first = cache.get_or_build(name="sr-fp16", key=key, build=build)
    assert build.calls == 1
    assert cache.get_or_build(name="sr-fp16", key=key, build=build) == first
    assert build.calls == 1  # a good engine is reused

    engine, meta = cache.paths(name="sr-fp16", key=key)
    tamper(engine, meta)
    with caplog.at_level(logging.WARNING, logger="vs_skipsr.export"):
        again = cache.get_or_build(name="sr-fp16", key=key, build=build)
    assert build.calls == 2
    assert again != first and again == engine.read_bytes()
    assert "rebuilding" in caplog.text
    assert cache.load(name="sr-fp16", key=key) == again  # and the rebuilt one is good


def test_failed_build_writes_nothing(tmp_path):
    cache = EngineCache(tmp_path)

    def broken() -> bytes:
        raise RuntimeError("parser error")

    with pytest.raises(RuntimeError):
        cache.get_or_build(name="sr-fp16", key=engine_cache_key(PARTS), build=broken)
    assert list(tmp_path.iterdir()) == []


def test_engine_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIPSR_ENGINE_DIR", str(tmp_path / "mine"))
    assert default_engine_dir() == tmp_path / "mine"
    assert EngineCache().directory == tmp_path / "mine"
    monkeypatch.delenv("SKIPSR_ENGINE_DIR")
    assert default_engine_dir().name == "engines"


@pytest.fixture()
def fake_trt(monkeypatch):
    """A stand-in TensorRT module: prepare_engines only reads its name and version."""
    module = types.SimpleNamespace(__name__="fake_tensorrt", __version__="10.0")
    monkeypatch.setattr(export, "trt_module", lambda: module)
    return module


def test_prepare_engines_exports_and_builds_once(tmp_path, fake_trt):
    sr = SRTransformer(PRESETS["tiny"]).eval()
    mask = MaskNet(MaskConfig(width=8, depth=3)).eval()
    spec = ProfileSpec.for_config(sr.config, frames=2, height=64, width=96, scale=2)
    cache = EngineCache(tmp_path)
    build = CountingBuilder()
    first = prepare_engines(
        sr=sr, mask=mask, spec=spec, precision="fp16", cache=cache, builder=build, device_index=None
    )
    assert build.calls == 2 and set(first) == {"sr", "mask"}
    assert len(list(tmp_path.glob("*.onnx"))) == 2
    assert first["sr"].profiles == spec.sr_profiles()

    again = prepare_engines(
        sr=sr, mask=mask, spec=spec, precision="fp16", cache=cache, builder=build, device_index=None
    )
    assert build.calls == 2  # both from the cache
    assert {k: r.key for k, r in again.items()} == {k: r.key for k, r in first.items()}

    _tamper_truncate(*cache.paths(name=first["sr"].name, key=first["sr"].key))
    prepare_engines(
        sr=sr, mask=mask, spec=spec, precision="fp16", cache=cache, builder=build, device_index=None
    )
    assert build.calls == 3  # only the truncated one

    bigger = dataclasses.replace(spec, width=128)
    other = prepare_engines(
        sr=sr,
        mask=mask,
        spec=bigger,
        precision="fp16",
        cache=cache,
        builder=build,
        device_index=None,
    )
    assert build.calls == 5 and other["sr"].key != first["sr"].key

    fake_trt.__version__ = "10.1"  # a TensorRT upgrade invalidates every engine
    prepare_engines(
        sr=sr, mask=None, spec=spec, precision="fp16", cache=cache, builder=build, device_index=None
    )
    assert build.calls == 6
