"""Other people's sounds as test data: the manifest, the decoders (files, zip members, Doom lumps), onsets,
the scene mixer's truth and the `evaluate-library` command, on a small library made here as real files."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bodycam.device.detect.audio_features import FEATURES
from bodycam.device.errors import ClipError, ConfigError, UsageError
from bodycam.model_compile import cli
from bodycam.model_compile.library_eval import DEFAULT_HELD_OUT, DEFAULT_MANIFEST, load_library, split_library
from bodycam.model_compile.library_scenes import MIC_RATE, SHOT_PEAK_DBFS, Prepared, library_scenes
from bodycam.model_compile.sound_library import LibrarySound, load, onset, read_manifest

SHIPPED_MANIFEST = DEFAULT_MANIFEST


def _encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Real encoded bytes through PyAV: ``wav`` (16-bit PCM) or ``flac``; ``samples`` (n, ch)."""
    import av

    buf = io.BytesIO()
    codec, sfmt = {"wav": ("pcm_s16le", "s16"), "flac": ("flac", "s16")}[fmt]
    ch = samples.shape[1]
    with av.open(buf, mode="w", format=fmt) as c:
        st = c.add_stream(codec, rate=rate)
        st.layout = "stereo" if ch == 2 else "mono"
        for k in range(0, len(samples), 1024):
            block = samples[k : k + 1024]
            arr = np.ascontiguousarray((np.clip(block, -1, 1) * 32767).astype(np.int16).reshape(1, -1))
            fr = av.AudioFrame.from_ndarray(arr, format=sfmt, layout=st.layout.name)
            fr.sample_rate = rate
            for p in st.encode(fr):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return buf.getvalue()


def _shot(rate: int, lead: int) -> np.ndarray:
    """A crack-and-decay impulse after ``lead`` samples of silence."""
    rng = np.random.default_rng(3)
    t = np.arange(int(0.3 * rate)) / rate
    body = rng.standard_normal(len(t)) * np.exp(-t / 0.03)
    return np.concatenate([np.zeros(lead), 0.9 * body / np.abs(body).max()]).astype(np.float32)


def _dmx(samples_u8: bytes, rate: int) -> bytes:
    return struct.pack("<HHI", 3, rate, len(samples_u8) + 32) + b"\x80" * 16 + samples_u8 + b"\x80" * 16


def _wad(lumps: dict[str, bytes]) -> bytes:
    body = b"".join(lumps.values())
    pos = 12
    directory = b""
    for name, data in lumps.items():
        directory += struct.pack("<ii8s", pos, len(data), name.encode())
        pos += len(data)
    return b"IWAD" + struct.pack("<ii", len(lumps), 12 + len(body)) + body + directory


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, Path]:
    """A small library on disk: WAV and FLAC files, a zip member, a Doom lump, in two sources."""
    root = tmp_path / "lib"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rate = 44_100
    shot = _shot(rate, 500)
    (root / "a" / "shot.wav").write_bytes(_encode(np.stack([shot, shot], 1), rate, "wav"))
    (root / "a" / "shot2.flac").write_bytes(_encode(shot[:, None] * 0.8, rate, "flac"))
    clap = _shot(rate, 10)[: rate // 20] * 0.5
    with zipfile.ZipFile(root / "a" / "pak.zip", "w") as z:
        z.writestr("sound/clap.wav", _encode(clap[:, None], rate, "wav"))
    noise = (np.random.default_rng(4).standard_normal(rate * 2) * 0.05).astype(np.float32)
    (root / "a" / "bed.wav").write_bytes(_encode(noise[:, None], rate, "wav"))
    u8 = (np.clip(_shot(11_025, 100), -1, 1) * 127 + 128).astype(np.uint8).tobytes()
    (root / "b" / "game.wad").write_bytes(_wad({"DSBANG": _dmx(u8, 11_025), "DSDOOR": _dmx(u8[:2000], 11_025)}))
    (root / "b" / "broken.ogg").write_bytes(b"OggS not really")
    manifest = tmp_path / "sounds.tsv"
    manifest.write_text("# test library\n"
                        "alpha\tshot\tpistol\ta/shot.wav\n"
                        "alpha\tshot\tpistol\ta/shot2.flac   # a comment\n"
                        "alpha\timpulse\tclap\ta/pak.zip!sound/clap.wav\n"
                        "alpha\tbed\tnoise\ta/bed.wav\n"
                        "beta\tshot\tbang\tb/game.wad!DSBANG\n"
                        "beta\timpulse\tdoor\tb/game.wad!DSDOOR\n"
                        "beta\timpulse\tdoor\tb/broken.ogg\n")
    return manifest, root


def test_the_manifest_is_read_and_bad_lines_are_named(tmp_path: Path, library: tuple[Path, Path]) -> None:
    sounds = read_manifest(library[0])
    assert [(s.source, s.label, s.kind) for s in sounds][:2] == [("alpha", "shot", "pistol")] * 2
    assert sounds[1].path == "a/shot2.flac" and sounds[1].line == 3
    bad = {
        "alpha\tshot\tpistol\n": "expected 4 tab-separated fields",
        "alpha\tgunshot\tpistol\ta.wav\n": "label 'gunshot' is not one of shot, impulse, bed",
        "alpha\tshot\tpistol\t../a.wav\n": "must stay inside",
        "alpha\tshot\tpistol\t/etc/a.wav\n": "must stay inside",
        "a\tshot\tp\tx.wav\na\tbed\tq\tx.wav\n": "listed twice",
        "# nothing\n": "lists no sounds",
    }
    for text, words in bad.items():
        m = tmp_path / "bad.tsv"
        m.write_text(text)
        with pytest.raises(ConfigError, match=words) as err:
            read_manifest(m)
        assert str(m) in str(err.value)
    with pytest.raises(ConfigError, match="cannot read"):
        read_manifest(tmp_path / "missing.tsv")


def test_files_zip_members_and_doom_lumps_decode_to_their_samples(library: tuple[Path, Path]) -> None:
    manifest, root = library
    sounds = {s.path: s for s in read_manifest(manifest)}
    wav = load(root, sounds["a/shot.wav"])
    want = _shot(44_100, 500)
    assert wav.rate == 44_100 and wav.audio.dtype == np.float32 and wav.audio.ndim == 1
    assert np.abs(wav.audio[: len(want)] - want).max() < 2 / 32768  # stereo of equal channels -> the same mono
    ogg = load(root, sounds["a/shot2.flac"])
    assert ogg.rate == 44_100 and abs(float(np.abs(ogg.audio).max()) - 0.72) < 1e-3
    assert load(root, sounds["a/pak.zip!sound/clap.wav"]).audio.size > 0
    lump = load(root, sounds["b/game.wad!DSBANG"])
    u8 = (np.clip(_shot(11_025, 100), -1, 1) * 127 + 128).astype(np.uint8)
    assert lump.rate == 11_025
    assert np.array_equal(lump.audio, (u8.astype(np.float32) - 128) / 128)  # the 16 pad bytes each side dropped


def test_unreadable_sounds_are_clear_errors(library: tuple[Path, Path]) -> None:
    manifest, root = library
    with pytest.raises(ClipError, match=r"broken\.ogg: cannot decode"):
        load(root, LibrarySound("beta", "impulse", "door", "b/broken.ogg"))
    with pytest.raises(ClipError, match="no such file"):
        load(root, LibrarySound("beta", "shot", "x", "b/none.wav"))
    with pytest.raises(ClipError, match="no lump 'DSNONE'"):
        load(root, LibrarySound("beta", "shot", "x", "b/game.wad!DSNONE"))
    with pytest.raises(ClipError, match="cannot read"):
        load(root, LibrarySound("alpha", "shot", "x", "a/pak.zip!sound/none.wav"))
    with pytest.raises(ClipError, match="not an archive"):
        load(root, LibrarySound("alpha", "shot", "x", "a/shot.wav!inner"))
    ok, bad = load_library(manifest, root)
    assert len(ok) == 6 and len(bad) == 1 and ":8: " in bad[0] and "broken.ogg" in bad[0]


def test_a_sound_starts_where_its_level_first_rises() -> None:
    rate = 48_000
    x = _shot(rate, 1234)
    x[:1234] = np.random.default_rng(5).standard_normal(1234) * 1e-3  # faint pre-noise is skipped
    assert onset(x.astype(np.float32), rate) == 1234


def test_scene_truth_lies_on_the_placed_sound(library: tuple[Path, Path]) -> None:
    manifest, root = library
    decoded, _ = load_library(manifest, root)
    lib = Prepared([d for d in decoded if d.sound.label == "shot"])  # shots alone: every rise is a shot
    assert len(lib.shots) == 3 and not lib.impulses and not lib.beds
    scenes = library_scenes(lib, 4, 7, seconds=6.0)
    sr = FEATURES.sample_rate
    found = 0
    for ls in scenes:
        assert len(ls.scene.shots) == len(ls.shot_peaks_db) >= 1
        assert all(SHOT_PEAK_DBFS[0] <= p <= SHOT_PEAK_DBFS[1] for p in ls.shot_peaks_db)
        assert float(np.abs(ls.scene.audio).max()) <= 1.05  # clipped at the microphone, then resampled
        for s, fam in ls.scene.shots:
            assert fam.startswith(("alpha:", "beta:"))
            seg = ls.scene.audio[max(0, s - sr // 10) : s + sr // 10]
            rise = onset(seg, sr) + max(0, s - sr // 10)
            assert abs(rise - s) <= sr // 1000, (rise, s)  # within 1 ms
            found += 1
    assert found >= 4 and MIC_RATE == 48_000


def test_the_held_out_split_names_real_sources(library: tuple[Path, Path]) -> None:
    decoded, _ = load_library(*library)
    split = split_library(decoded, ("beta",))
    assert {d.sound.source for d in split["held_out"]} == {"beta"}
    assert {d.sound.source for d in split["dev"]} == {"alpha"}
    with pytest.raises(UsageError, match="gamma"):
        split_library(decoded, ("gamma",))


def test_evaluate_library_reports_the_held_out_sources_first(tmp_path: Path, library: tuple[Path, Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    manifest, root = library
    out = tmp_path / "res.json"
    rc = cli.main(["evaluate-library", "--manifest", str(manifest), "--root", str(root), "--held-out", "beta",
                   "--scenes", "2", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.index("  held_out ") < text.index("  dev ")
    res = json.loads(out.read_text())
    assert res["held_out_sources"] == ["beta"] and res["splits"]["held_out"]["shot"] == 1
    assert len(res["unreadable"]) == 1
    (model, r), = res["models"].items()
    assert model.endswith("shotnet_audio.tflite")
    for s in ("held_out", "dev"):
        assert r[s]["shots"] >= 2 and 0 <= r[s]["recall"] <= 1
        assert r[f"{s}_shot_free"]["shots"] == 0 and r[f"{s}_shot_free"]["minutes"] == pytest.approx(2 * 10 / 60, abs=0.01)
        assert sum(b["shots"] for b in r["recall_by_level"][s].values()) == r[s]["shots"]
    assert "0.9" in r["sweep"] and set(r["sweep"]["0.9"]) == {"held_out", "dev"}
    rc = cli.main(["evaluate-library", "--manifest", str(manifest), "--root", str(root), "--held-out", "gamma"])
    assert rc != 0 and "gamma" in capsys.readouterr().err
    rc = cli.main(["evaluate-library", "--manifest", str(manifest), "--root", str(tmp_path / "nowhere")])
    assert rc != 0 and "no gunshot of the library could be read" in capsys.readouterr().err


def test_the_shipped_manifest_parses_and_holds_out_whole_sources() -> None:
    sounds = read_manifest(SHIPPED_MANIFEST)
    sources = {s.source for s in sounds}
    assert set(DEFAULT_HELD_OUT) <= sources and sources - set(DEFAULT_HELD_OUT)
    for held in (True, False):
        part = [s for s in sounds if (s.source in DEFAULT_HELD_OUT) == held]
        assert sum(s.label == "shot" for s in part) >= 10
        assert sum(s.label == "impulse" for s in part) >= 40
        assert sum(s.label == "bed" for s in part) >= 5


def test_library_training_scenes_never_hear_a_held_out_source(library: tuple[Path, Path]) -> None:
    from bodycam.model_compile.audio_data import DataSpec, _library_training

    manifest, root = library
    spec = DataSpec(library_scenes=6, library_free_scenes=2, library_scene_s=4.0, library_root=str(root),
                    library_manifest=str(manifest), library_held_out=("beta",))
    scenes = _library_training(spec, lambda _m: None)
    assert len(scenes) == 8
    assert sum(len(sc.shots) for sc in scenes[:6]) >= 6 and not any(sc.shots for sc in scenes[6:])
    heard = {fam for sc in scenes for _s, fam in (*sc.shots, *sc.impulses)}
    assert heard and all(f.startswith("alpha:") for f in heard)


def _video_packets(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def _sound(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray()[0] for f in c.decode(c.streams.audio[0])])


def test_a_dubbed_track_puts_library_gunshots_on_the_true_shots(library: tuple[Path, Path]) -> None:
    from bodycam.model_compile.library_dub import dub_track

    decoded, _ = load_library(*library)
    lib = Prepared([d for d in decoded if d.sound.label != "bed"])
    truth = {"clip": "c.mp4", "audio": {"sample_rate": 48_000, "samples": 96_000},
             "shots": [{"audio_sample": 12_000, "loudness_db": 3.0}, {"audio_sample": 70_000, "loudness_db": -40.0}],
             "distractors": [{"kind": "door_slam", "audio_sample": 40_000}, {"kind": "siren", "audio_sample": 100}]}
    x = dub_track(truth, lib, np.random.default_rng(1))
    assert x.shape == (96_000,) and x.dtype == np.float32 and float(np.abs(x).max()) <= 1.0
    assert float(np.abs(x[:12_000]).max()) == 0.0  # no bed in this library: silence until the first shot
    assert abs(onset(x[6_000:30_000], 48_000) + 6_000 - 12_000) <= 48  # within 1 ms
    assert float(np.abs(x[12_000:12_500]).max()) == 1.0  # +3 dB: clipped at full scale
    quiet = float(np.abs(x[70_000:70_500]).max())
    assert 0.05 < quiet < 0.07  # loudness limited to the library's quietest shot, -24 dBFS
    assert float(np.abs(x[40_000:40_300]).max()) > 0.02  # the door slam became a library impulse
    with pytest.raises(ClipError, match="44100 Hz"):
        dub_track({**truth, "audio": {"sample_rate": 44_100, "samples": 10}}, lib, np.random.default_rng(1))


def test_dubbing_keeps_the_video_and_the_truth_and_replaces_the_sound(tmp_path: Path, library: tuple[Path, Path]) -> None:
    from _clips import make_plain_clip

    from bodycam.model_compile.library_dub import dub_dataset

    src = tmp_path / "set"
    (src / "heldout").mkdir(parents=True)
    make_plain_clip(src / "heldout" / "c.mp4", seconds=2.0)
    truth = {"schema": "bodycam.truth/1", "clip": "c.mp4", "audio": {"sample_rate": 48_000, "samples": 96_000},
             "shots": [{"frame": 30, "audio_sample": 48_000, "loudness_db": 0.0}], "distractors": []}
    (src / "heldout" / "c.truth.json").write_text(json.dumps(truth))
    (src / "index.json").write_text(json.dumps({"clips": [{"path": "heldout/c.mp4", "truth": "heldout/c.truth.json"}]}))
    decoded, _ = load_library(*library)
    out = tmp_path / "dub"
    assert dub_dataset(src, out, Prepared([d for d in decoded if d.sound.label != "bed"]), 5) == 1
    assert (out / "index.json").read_bytes() == (src / "index.json").read_bytes()
    assert (out / "heldout" / "c.truth.json").read_bytes() == (src / "heldout" / "c.truth.json").read_bytes()
    assert _video_packets(out / "heldout" / "c.mp4") == _video_packets(src / "heldout" / "c.mp4")
    before, after = _sound(src / "heldout" / "c.mp4"), _sound(out / "heldout" / "c.mp4")
    assert len(after) >= 96_000 and not np.allclose(before[:96_000], after[:96_000])
    rise = onset(after[44_000:60_000], 48_000) + 44_000
    assert abs(rise - 48_000) <= 48  # the library gunshot's onset on the true shot, within 1 ms (after AAC)
    with pytest.raises(UsageError, match=r"index\.json"):
        dub_dataset(tmp_path / "library", out, Prepared(decoded), 5)
    (src / "heldout" / "c.truth.json").write_text(json.dumps({**truth, "shots": [{"frame": 30}]}))
    with pytest.raises(ClipError, match=r"c\.truth\.json: not a usable truth file \(KeyError"):
        dub_dataset(src, tmp_path / "dub2", Prepared(decoded), 5)
