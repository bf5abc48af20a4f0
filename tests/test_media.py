"""Audio import, normalised-WAV validation and the shipped prompts."""

from __future__ import annotations

import hashlib
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialer.core.errors import AudioError, ValidationError
from media.audio import AudioInfo, import_audio, validate_normalised, wav_seconds
from media.prompts import (
    CONNECT_PROMPT,
    DEFAULT_KEYS,
    KEY_FILES,
    KEY_PROMPT_NAMES,
    KEY_WORDS,
    LANGUAGES,
    PROMPT_NAMES,
    PROMPT_TEXTS,
    connect_prompt_texts,
    key_prompt_path,
    key_prompt_texts,
    prompt_path,
    prompt_set,
)

TONE_HZ = 440.0
SECONDS = 1.5


def tone(rate: int, channels: int = 1, seconds: float = SECONDS,
         amplitude: float = 0.5) -> npt.NDArray[np.float64]:
    """A sine of TONE_HZ, the same on every channel, shape (frames, channels)."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = amplitude * np.sin(2 * np.pi * TONE_HZ * t)
    return np.repeat(x[:, None], channels, axis=1)


def dominant_hz(x: npt.NDArray[np.int16], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(x))


def files_in(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.exists() else []


def wav(*chunks: tuple[bytes, bytes]) -> bytes:
    """A RIFF/WAVE file made of the given (id, body) chunks, with a correct RIFF size."""
    body = b"WAVE" + b"".join(
        cid + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
        for cid, data in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt(rate: int = 8000, channels: int = 1, bits: int = 16, tag: int = 1) -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)


# (id, soundfile format, subtype, sample rate, channels)
SOURCES = [
    ("wav-44k1-stereo-16bit", "WAV", "PCM_16", 44100, 2),
    ("wav-22k05-mono-8bit", "WAV", "PCM_U8", 22050, 1),
    ("wav-32k-mono-24bit", "WAV", "PCM_24", 32000, 1),
    ("wav-44k1-mono-32bit", "WAV", "PCM_32", 44100, 1),
    ("wav-44k1-stereo-float", "WAV", "FLOAT", 44100, 2),
    ("wav-96k-mono-double", "WAV", "DOUBLE", 96000, 1),
    ("wav-48k-mono-16bit", "WAV", "PCM_16", 48000, 1),
    ("wav-8k-mono-16bit", "WAV", "PCM_16", 8000, 1),
    ("wavex-48k-6ch-24bit", "WAVEX", "PCM_24", 48000, 6),
    ("flac-44k1-stereo", "FLAC", "PCM_16", 44100, 2),
    ("ogg-vorbis-48k-stereo", "OGG", "VORBIS", 48000, 2),
    ("mp3-44k1-stereo", "MP3", "MPEG_LAYER_III", 44100, 2),
    ("aiff-44k1-mono", "AIFF", "PCM_16", 44100, 1),
]
SUFFIX = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3", "AIFF": "aiff"}


def write_source(path: Path, fmt_name: str, subtype: str, rate: int, channels: int) -> None:
    if not sf.check_format(fmt_name, subtype):
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write "
                    f"{fmt_name}/{subtype}")
    sf.write(str(path), tone(rate, channels), rate, format=fmt_name, subtype=subtype)


@pytest.mark.parametrize("out_rate", [8000, 16000])
@pytest.mark.parametrize(("fmt_name", "subtype", "rate", "channels"),
                         [s[1:] for s in SOURCES], ids=[s[0] for s in SOURCES])
def test_import_normalises_every_format(tmp_path: Path, fmt_name: str, subtype: str, rate: int,
                                        channels: int, out_rate: int) -> None:
    src = tmp_path / f"message.{SUFFIX[fmt_name]}"
    write_source(src, fmt_name, subtype, rate, channels)
    dest = tmp_path / "store"

    info = import_audio(src, dest, rate=out_rate)

    assert isinstance(info, AudioInfo)
    assert files_in(dest) == [info.path]
    assert info.path.name == f"{info.sha256}.wav"
    assert hashlib.sha256(info.path.read_bytes()).hexdigest() == info.sha256
    assert info.rate == out_rate
    assert info.seconds == pytest.approx(SECONDS, abs=0.020)
    assert wav_seconds(info.path) == pytest.approx(info.seconds, abs=1e-9)
    assert str(rate) in info.source_format
    validate_normalised(info.path)

    check = sf.info(str(info.path))
    assert (check.format, check.subtype, check.channels, check.samplerate) == (
        "WAV", "PCM_16", 1, out_rate)
    assert info.path.stat().st_size == 44 + 2 * check.frames  # only fmt and data chunks
    samples, _ = sf.read(str(info.path), dtype="int16")
    assert dominant_hz(samples, out_rate) == pytest.approx(TONE_HZ, abs=5)
    # The tone was at half scale on every channel: the downmix keeps its level.
    peak = np.abs(samples[out_rate // 10: -out_rate // 10]).max() / 32768
    assert peak == pytest.approx(0.5, abs=0.05)


def test_same_rate_16bit_mono_is_bit_exact(tmp_path: Path) -> None:
    src = tmp_path / "in.wav"
    original = (tone(8000)[:, 0] * 32767).astype(np.int16)
    sf.write(str(src), original, 8000, subtype="PCM_16")
    info = import_audio(src, tmp_path / "store")
    assert np.array_equal(sf.read(str(info.path), dtype="int16")[0], original)


def test_import_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.flac"
    pcm = (tone(44100)[:, 0] * 32767).astype(np.int16)
    sf.write(str(a), pcm, 44100, subtype="PCM_16")
    sf.write(str(b), pcm, 44100, format="FLAC", subtype="PCM_16")
    dest = tmp_path / "store"
    first, second, third = (import_audio(a, dest), import_audio(b, dest),
                            import_audio(str(a), dest))
    assert first.path == second.path == third.path  # lossless sources, same PCM, one file
    assert files_in(dest) == [first.path]
    wide = import_audio(a, dest, rate=16000)
    assert wide.path != first.path
    assert len(files_in(dest)) == 2


def test_float_samples_out_of_range_are_clipped_and_nan_silenced(tmp_path: Path) -> None:
    x = tone(8000, amplitude=4.0)[:, 0]
    x[100:200] = np.nan
    x[300] = np.inf
    src = tmp_path / "loud.wav"
    sf.write(str(src), x, 8000, subtype="FLOAT")
    info = import_audio(src, tmp_path / "store")
    samples, _ = sf.read(str(info.path), dtype="int16")
    assert samples.max() == 32767 and samples.min() == -32768  # clipped, not wrapped around
    assert not samples[100:200].any()
    validate_normalised(info.path)


def test_streamed_wav_with_placeholder_sizes_is_imported(tmp_path: Path) -> None:
    # What `espeak-ng --stdout` and other streaming writers produce: sizes left at 0x7fff....
    pcm = (tone(16000)[:, 0] * 20000).astype("<i2").tobytes()
    header = struct.pack("<4sI4s4sI", b"RIFF", 0x7FFFFFFF, b"WAVE", b"fmt ", 16) + fmt(16000)
    src = tmp_path / "streamed.wav"
    src.write_bytes(header + b"data" + struct.pack("<I", 0x7FFFFFFF) + pcm)
    info = import_audio(src, tmp_path / "store")
    assert info.seconds == pytest.approx(SECONDS, abs=0.020)
    validate_normalised(info.path)


def test_text_file_renamed_wav_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "notes.wav"
    src.write_text("This is not audio at all, just some notes.\n" * 20)
    dest = tmp_path / "store"
    with pytest.raises(AudioError, match="notes.wav: cannot be decoded") as caught:
        import_audio(src, dest)
    assert "\n" not in str(caught.value)
    assert files_in(dest) == []


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="nothere.wav: no such file"):
        import_audio(tmp_path / "nothere.wav", tmp_path / "store")
    with pytest.raises(AudioError, match="not a regular file"):
        import_audio(tmp_path, tmp_path / "store")
    assert files_in(tmp_path / "store") == []


@pytest.mark.parametrize(("fmt_name", "subtype", "why"), [
    ("WAV", "PCM_16", r"contains no audio \(0 frames\)"),
    ("WAV", "FLOAT", r"contains no audio \(0 frames\)"),
    # libsndfile itself cannot reopen the FLAC it writes for zero frames.
    ("FLAC", "PCM_16", r"cannot be decoded as audio \(Format not recognised.\)"),
])
def test_empty_file_is_refused(tmp_path: Path, fmt_name: str, subtype: str, why: str) -> None:
    src = tmp_path / f"empty.{SUFFIX[fmt_name]}"
    sf.write(str(src), np.zeros(0), 8000, format=fmt_name, subtype=subtype)
    dest = tmp_path / "store"
    with pytest.raises(AudioError, match=rf"empty\.\w+: {why}$"):
        import_audio(src, dest)
    assert files_in(dest) == []


def test_zero_byte_file_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "zero.wav"
    src.touch()
    with pytest.raises(AudioError, match="zero.wav"):
        import_audio(src, tmp_path / "store")
    assert files_in(tmp_path / "store") == []


@pytest.mark.parametrize("fmt_name", ["WAV", "MP3"])
def test_too_long_is_refused_with_the_limit(tmp_path: Path, fmt_name: str) -> None:
    src = tmp_path / f"long.{SUFFIX[fmt_name]}"
    write_source(src, fmt_name, "PCM_16" if fmt_name == "WAV" else "MPEG_LAYER_III", 44100, 1)
    dest = tmp_path / "store"
    with pytest.raises(AudioError, match=r"long\.\w+: .*longer than the limit of 1\.2 s"):
        import_audio(src, dest, max_seconds=1.2)
    assert files_in(dest) == []
    assert import_audio(src, dest, max_seconds=1.6).seconds == pytest.approx(SECONDS, abs=0.02)


def test_default_limit_is_ten_minutes(tmp_path: Path) -> None:
    src = tmp_path / "long.wav"
    sf.write(str(src), np.zeros(8000 * 601, dtype=np.int16), 8000, subtype="PCM_16")
    with pytest.raises(AudioError, match="601.0 s long, longer than the limit of 600 s"):
        import_audio(src, tmp_path / "store")
    assert files_in(tmp_path / "store") == []


@pytest.mark.parametrize("rate", [0, 11025, 22050, 44100])
def test_unsupported_output_rate_is_refused(tmp_path: Path, rate: int) -> None:
    src = tmp_path / "in.wav"
    sf.write(str(src), tone(8000), 8000)
    with pytest.raises(AudioError, match="8000 or 16000"):
        import_audio(src, tmp_path / "store", rate=rate)
    assert files_in(tmp_path / "store") == []


GOOD_DATA = b"\x01\x00" * 800


@pytest.mark.parametrize(("content", "why"), [
    (wav((b"fmt ", fmt()), (b"LIST", b""), (b"data", GOOD_DATA)), "zero-length 'LIST'"),
    (wav((b"fmt ", fmt()), (b"data", b"")), "zero-length 'data'"),
    (wav((b"fmt ", fmt()), (b"LIST", b"INFOxxxx"), (b"data", GOOD_DATA)), "unexpected 'LIST'"),
    (wav((b"fmt ", fmt()), (b"data", GOOD_DATA), (b"data", GOOD_DATA)), "unexpected 'data'"),
    (wav((b"data", GOOD_DATA), (b"fmt ", fmt())), "unexpected 'data'"),
    (wav((b"fmt ", fmt())), "missing data"),
    (wav((b"fmt ", fmt(channels=2)), (b"data", GOOD_DATA)), "2 channels"),
    (wav((b"fmt ", fmt(rate=44100)), (b"data", GOOD_DATA)), "44100 Hz"),
    (wav((b"fmt ", fmt(bits=8)), (b"data", GOOD_DATA)), "not 16-bit PCM"),
    (wav((b"fmt ", fmt(tag=3, bits=32)), (b"data", GOOD_DATA)), "not 16-bit PCM"),
    (wav((b"fmt ", fmt(tag=0xFFFE)), (b"data", GOOD_DATA)), "not 16-bit PCM"),
    (wav((b"fmt ", fmt()), (b"data", GOOD_DATA))[:-10], "RIFF size"),
    (wav((b"fmt ", fmt()), (b"data", GOOD_DATA)) + b"\0" * 4, "RIFF size"),
    (b"OggS" + b"\0" * 100, "not a RIFF/WAVE"),
    (b"", "not a RIFF/WAVE"),
])
def test_validate_normalised_refuses(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=why):
        validate_normalised(path)
    with pytest.raises(AudioError):
        wav_seconds(path)


def test_validate_normalised_accepts_a_plain_file_and_times_it(tmp_path: Path) -> None:
    path = tmp_path / "ok.wav"
    path.write_bytes(wav((b"fmt ", fmt(rate=16000)), (b"data", GOOD_DATA)))
    validate_normalised(path)
    assert wav_seconds(path) == pytest.approx(800 / 16000)
    with pytest.raises(AudioError, match="cannot read"):
        validate_normalised(tmp_path / "missing.wav")


def test_validate_normalised_refuses_what_libsndfile_writes_for_float(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    sf.write(str(path), tone(8000), 8000, subtype="FLOAT")  # has a fact and a PEAK chunk too
    with pytest.raises(AudioError):
        validate_normalised(path)


@pytest.mark.parametrize("language", LANGUAGES)
def test_shipped_prompts_exist_and_are_normalised(language: str) -> None:
    prompts = prompt_set(language)
    assert list(prompts) == list(PROMPT_NAMES)
    assert set(PROMPT_TEXTS[language]) == set(PROMPT_NAMES)
    for name, path in prompts.items():
        assert path == prompt_path(language, name)
        validate_normalised(path)
        assert sf.info(str(path)).samplerate == 8000
        assert 1.0 < wav_seconds(path) < 8.0, name
        assert path.stat().st_size < 128 * 1024, name


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_key_has_its_prompts(language: str) -> None:
    """A prompt that says each key: a random key's digit, a fixed key other than the default,
    and the connect offer; the default key (1 to answer, 9 to listen) is the prompt itself."""
    texts = key_prompt_texts(language)
    assert len(texts) == len(KEY_PROMPT_NAMES) * 11
    for name in KEY_PROMPT_NAMES:
        for key in "0123456789*#":
            path = key_prompt_path(language, name, key)
            if key == DEFAULT_KEYS[name]:
                assert path == prompt_path(language, name)
                continue
            stem = f"{name}_{KEY_FILES[key]}"
            assert path.name == f"{stem}.wav"
            said = KEY_WORDS[language].get(key, key)
            assert said in texts[stem]  # "press 4", "premi 4", "press star", "premi cancelletto"
            validate_normalised(path)
            assert 1.0 < wav_seconds(path) < 8.0 and path.stat().st_size < 128 * 1024
    for key, text in connect_prompt_texts(language).items():
        path = key_prompt_path(language, CONNECT_PROMPT, key.rsplit("_", 1)[1]
                               .replace("star", "*").replace("hash", "#"))
        assert path.stem == key and text.startswith(("To speak", "Per parlare"))
        validate_normalised(path)
    for bad in ("44", "x", ""):
        with pytest.raises(ValidationError):
            key_prompt_path(language, "answer_prompt", bad)
    with pytest.raises(ValidationError):
        key_prompt_path(language, "goodbye", "4")


def test_prompt_languages_and_names() -> None:
    assert set(LANGUAGES) == {"en", "it"}
    assert prompt_path("it-IT", "goodbye") == prompt_path("it", "goodbye")
    assert prompt_path("EN_gb", "goodbye") == prompt_path("en", "goodbye")
    with pytest.raises(ValidationError, match="no prompts for language 'fr'"):
        prompt_path("fr", "goodbye")
    with pytest.raises(ValidationError, match="no prompts for language"):
        prompt_set("de")
    with pytest.raises(ValidationError, match="no prompt named 'hello'"):
        prompt_path("en", "hello")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synthesize_goes_through_import(tmp_path: Path) -> None:
    from media.tts import synthesize

    info = synthesize("Grazie. Arrivederci.", "it", tmp_path, rate=16000)
    validate_normalised(info.path)
    assert info.rate == 16000 and 1.0 < info.seconds < 4.0
    assert "22050 Hz" in info.source_format


# --- property: hostile bytes never escape as anything but AudioError, and leave nothing ---

def _valid_sources() -> list[bytes]:
    """Small valid files of each container, to be mutated by the property test."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt_name, subtype in [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"),
                                  ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"),
                                  ("AIFF", "PCM_24")]:
            if sf.check_format(fmt_name, subtype):
                path = Path(tmp) / f"x.{fmt_name.lower()}"
                sf.write(str(path), tone(8000, seconds=0.2), 8000, format=fmt_name,
                         subtype=subtype)
                out.append(path.read_bytes())
    return out


VALID = _valid_sources()
MAGIC = [b"RIFF\xff\xff\xff\x7fWAVEfmt ", b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00",
         b"fLaC", b"OggS\x00\x02", b"ID3\x04\x00", b"\xff\xfb\x90\x64", b"FORM\x00\x00\x00\x00AIFF",
         b"RF64", b"caff", b".snd", b""]


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "magic", "mutated", "truncated"]))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "magic":
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=4096))
    data = bytearray(draw(st.sampled_from(VALID)))
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=hostile_bytes(), suffix=st.sampled_from([".wav", ".mp3", ".ogg", ".flac", ""]))
def test_hostile_bytes_only_raise_audio_error_and_leave_nothing(content: bytes,
                                                                suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"upload{suffix}"
        src.write_bytes(content)
        dest = Path(tmp) / "store"
        try:
            info = import_audio(src, dest, max_seconds=30.0)
        except AudioError as exc:
            assert "\n" not in str(exc)
            assert files_in(dest) == []
        else:  # a mutation that still decodes: then the result must be sound
            assert files_in(dest) == [info.path]
            validate_normalised(info.path)
            assert 0 < info.seconds <= 30.0


# ----- issue 10: a declared length that disagrees with the content is refused -----


def lying_wav(declared: int, actual: int, *, riff: int | None = None,
              trailing: bytes = b"") -> bytes:
    """A 16-bit mono 8 kHz WAV whose data chunk declares ``declared`` bytes and holds
    ``actual``; the RIFF size is consistent with the declared data unless ``riff`` is given."""
    pcm = (tone(8000, seconds=actual / 16000)[:, 0] * 20000).astype("<i2").tobytes()[:actual]
    size = 4 + 8 + 16 + 8 + declared if riff is None else riff
    return (b"RIFF" + struct.pack("<I", size) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt(8000) + b"data" + struct.pack("<I", declared) + pcm + trailing)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        # the case: 16,000 data bytes declared, 100 present (was stored as 0.006 s)
        (lying_wav(16000, 100), "data chunk declares 16000 bytes but only 100 follow"),
        (lying_wav(16000, 15999 - 1), "declares 16000 bytes but only 15998 follow"),
        # the RIFF size is right for what is there, the data chunk still lies
        (lying_wav(16000, 100, riff=4 + 8 + 16 + 8 + 100), "declares 16000 bytes"),
        # data longer than the header says: bytes past the declared end are refused
        (lying_wav(100, 16000), "RIFF header declares 144 bytes but the file has 16044"),
        (lying_wav(100, 100, trailing=b"garbage!" * 10), "declares 144 bytes but the file has 224"),
        # trailing garbage counted in the RIFF size: it does not parse as a chunk
        (lying_wav(100, 100, riff=4 + 8 + 16 + 8 + 100 + 80, trailing=b"garbage!" * 10),
         "'garb' chunk declares"),
        (lying_wav(100, 100, riff=4 + 8 + 16 + 8 + 100 + 5, trailing=b"junk!"),
         "5 bytes after the last chunk"),
    ],
)
def test_wav_whose_declared_length_disagrees_with_its_content_is_refused(
        tmp_path: Path, content: bytes, why: str) -> None:
    src = tmp_path / "bad.wav"
    src.write_bytes(content)
    dest = tmp_path / "store"
    with pytest.raises(AudioError) as caught:
        import_audio(src, dest)
    msg = str(caught.value)
    assert "\n" not in msg and msg.startswith(f"{src}: ") and why in msg, msg
    assert "declared length disagrees with the content" in msg
    assert files_in(dest) == []


def test_aiff_whose_sound_chunk_is_cut_short_is_refused(tmp_path: Path) -> None:
    whole = tmp_path / "whole.aiff"
    sf.write(str(whole), tone(8000), 8000, format="AIFF", subtype="PCM_16")
    src = tmp_path / "cut.aiff"
    src.write_bytes(whole.read_bytes()[:-1000])
    with pytest.raises(AudioError, match="declared length disagrees with the content"):
        import_audio(src, tmp_path / "store")
    assert files_in(tmp_path / "store") == []


@pytest.mark.parametrize("extra", [
    b"LIST" + struct.pack("<I", 12) + b"INFOISFT\0\0\0\0",  # a metadata chunk after the data
    b"id3 " + struct.pack("<I", 3) + b"ID3\0",  # an odd-sized chunk and its pad byte
])
def test_wav_with_well_formed_chunks_after_the_data_is_imported(tmp_path: Path,
                                                               extra: bytes) -> None:
    body = lying_wav(16000, 16000)[8:] + extra
    src = tmp_path / "tagged.wav"
    src.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert import_audio(src, tmp_path / "store").seconds == pytest.approx(1.0)


def test_wav_missing_only_the_final_pad_byte_is_imported(tmp_path: Path) -> None:
    """Writers disagree on whether an odd last chunk's pad byte is written or counted."""
    body = lying_wav(16000, 16000)[8:] + b"id3 " + struct.pack("<I", 3) + b"ID3"
    src = tmp_path / "nopad.wav"
    src.write_bytes(b"RIFF" + struct.pack("<I", len(body) + 1) + body)
    assert import_audio(src, tmp_path / "store").seconds == pytest.approx(1.0)
