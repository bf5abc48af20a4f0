"""Audio import and validation: every file the SIP library plays goes through here first.

PJSIP 2.15's WAV player loops forever on a zero-length chunk and only plays plain PCM, so nothing
reaches it unless it is a *normalised* WAV: a plain RIFF file with exactly one ``fmt `` chunk
(PCM, 16 bit, mono, 8 or 16 kHz) and one non-empty ``data`` chunk, nothing else.
``import_audio`` turns anything libsndfile can decode into such a file; ``validate_normalised``
re-checks a stored file (cheaply, from its headers) before a worker hands it to the library.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from dialer.core.errors import AudioError

logger = logging.getLogger(__name__)

RATES: tuple[int, ...] = (8000, 16000)
"""Sample rates a normalised file may have (the narrowband and wideband rates of the codecs)."""

_HEADER_BYTES = 44  # RIFF header (12) + fmt chunk (8 + 16) + data chunk header (8)
_BLOCK_FRAMES = 65536  # frames decoded at a time: memory stays bounded whatever the input
_MIN_SOURCE_RATE = 1000  # outside this range a "sample rate" is a corrupt header, not audio
_MAX_SOURCE_RATE = 768000
_WAVE_FORMAT_PCM = 1
# What opening or reading an untrusted file can raise: libsndfile's own error, and the plain
# RuntimeError/ValueError/TypeError/MemoryError soundfile passes on for absurd header values.
# Caught around the soundfile calls only, so a bug in our own conversion is not disguised.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    sf.LibsndfileError, RuntimeError, ValueError, TypeError, OverflowError, MemoryError,
)


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """A normalised WAV written by ``import_audio``.

    ``sha256`` is the digest of the whole written file, which is also its name (``<sha256>.wav``):
    identical audio imported twice lands on one file, and ``sha256sum`` verifies a stored copy.
    """

    path: Path
    seconds: float
    rate: int
    sha256: str
    source_format: str  # e.g. "WAV (Microsoft), Signed 16 bit PCM, 44100 Hz, 2 channels"


def import_audio(src: str | Path, dest_dir: Path, *, rate: int = 8000,
                 max_seconds: float = 600.0) -> AudioInfo:
    """Decode ``src``, convert it to a normalised WAV at ``rate`` and store it in ``dest_dir``.

    Accepts whatever libsndfile decodes: WAV (8/16/24/32-bit integer, float, any rate, any number
    of channels), FLAC, OGG/Vorbis, MP3, AIFF and more. Channels are averaged to mono, the audio
    is resampled with soxr (high quality) and written as 16-bit PCM under a content-addressed name,
    through a temporary file renamed into place, so readers never see a partial file.

    Raises ``AudioError`` (one line, naming the file) when the file is missing, cannot be decoded,
    holds no audio, is longer than ``max_seconds``, or (WAV and AIFF) declares lengths that
    disagree with its content (``_check_declared_lengths``); nothing is written then.
    """
    path = Path(src)
    if rate not in RATES:
        raise AudioError(f"unsupported output sample rate {rate} Hz (use 8000 or 16000)")
    if not 0 < max_seconds < 86400:
        raise AudioError(f"maximum duration must be between 0 and 86400 s, not {max_seconds}")
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")

    _check_declared_lengths(path)
    pcm, source_format = _decode(path, rate, max_seconds)
    data = _wav_bytes(pcm, rate)
    digest = hashlib.sha256(data).hexdigest()
    final = _store(data, Path(dest_dir), f"{digest}.wav")
    info = AudioInfo(path=final, seconds=len(pcm) / rate, rate=rate, sha256=digest,
                     source_format=source_format)
    logger.info("imported %s as %s (%.3f s, %s)", path, final.name, info.seconds, source_format,
                extra={"audio_source": str(path), "audio_sha256": digest})
    return info


def wav_seconds(path: str | Path) -> float:
    """Duration in seconds of a normalised WAV (validated first; ``AudioError`` if it is not)."""
    rate, data_bytes = _check_normalised(Path(path))
    return data_bytes / (2 * rate)


def validate_normalised(path: str | Path) -> None:
    """Raise ``AudioError`` unless ``path`` is a normalised WAV the SIP library can safely play.

    Normalised means: a RIFF/WAVE file whose chunks are exactly one 16- or 18-byte ``fmt `` chunk
    (PCM, mono, 16 bit, 8000 or 16000 Hz) followed by one non-empty ``data`` chunk, with the RIFF
    size matching the file size. Any other chunk, in particular a zero-length one, is refused.
    Only the headers are read.
    """
    _check_normalised(Path(path))


# Sizes that streaming writers (which cannot seek back) leave in a RIFF/FORM header: "unknown,
# read to the end of the file". Any other size is a claim the content must match.
_PLACEHOLDER_MIN = 0x7FFFF000
_IFF_CONTAINERS = {b"RIFF": ("<", (b"WAVE",), b"data", "RIFF"),
                   b"RIFX": (">", (b"WAVE",), b"data", "RIFX"),
                   b"FORM": (">", (b"AIFF", b"AIFC"), b"SSND", "FORM")}


def _placeholder(size: int) -> bool:
    return size == 0 or size >= _PLACEHOLDER_MIN


def _check_declared_lengths(path: Path) -> None:
    """Refuse a WAV (RIFF, RIFX) or AIFF file whose headers disagree with its content.

    libsndfile quietly trusts what is there instead: a data chunk that declares 16,000 bytes but
    holds 100 plays as 6 ms, and bytes past the declared end are ignored. A message cut short or
    padded with junk is a broken export, not something to dial thousands of people with, so:

    * every chunk must fit in the file (the audio chunk too, unless its size is a streaming
      placeholder, 0 or >= 0x7ffff000: then the audio runs to the end of the file);
    * the container's size must be the file's size (one pad byte more or less is tolerated:
      writers disagree on counting the pad byte of an odd last chunk), unless it is a
      placeholder; so data longer than the header says (trailing bytes) is refused too;
    * bytes after the last chunk that do not form a chunk are refused.

    Well-formed chunks after the audio (LIST, id3, cue...) are fine. Other formats are left to
    their decoder: a truncated FLAC fails to decode, OGG and MP3 declare no length. Only the
    headers are read.
    """
    def bad(why: str) -> AudioError:
        return AudioError(f"{path}: declared length disagrees with the content: {why}")

    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(12)
            kind = _IFF_CONTAINERS.get(head[:4])
            if len(head) < 12 or kind is None or head[8:12] not in kind[1]:
                return  # not a RIFF/FORM file: the decoder judges it
            order, _, audio_id, label = kind
            (declared,) = struct.unpack(order + "I", head[4:8])
            # bytes past the container's declared end are the size check's, not chunks
            end = size if _placeholder(declared) else min(size, declared + 8)
            pos = 12
            while pos < end:
                if end - pos < 8:
                    if end - pos == 1:
                        break  # a final pad byte
                    raise bad(f"{end - pos} bytes after the last chunk are not a chunk")
                f.seek(pos)
                cid, csize = struct.unpack(order + "4sI", f.read(8))
                name = cid.decode("latin-1")
                if cid == audio_id and _placeholder(csize):
                    break  # a streaming writer's "to the end of the file"
                follow = size - pos - 8
                if csize > follow:
                    what = "data" if cid == audio_id else repr(name)
                    raise bad(f"the {what} chunk declares {csize} bytes but only {follow} follow")
                pos += 8 + csize + (csize & 1)
            if not _placeholder(declared) and abs(declared + 8 - size) > 1:
                raise bad(f"the {label} header declares {declared + 8} bytes but the file "
                          f"has {size}")
    except (OSError, struct.error) as exc:
        raise AudioError(f"{path}: cannot read ({_one_line(exc)})") from exc


def _decode(path: Path, rate: int, max_seconds: float) -> tuple[npt.NDArray[np.int16], str]:
    """Decode, downmix and resample ``path`` to mono int16 at ``rate``, enforcing the limits."""
    try:
        f = sf.SoundFile(str(path))
    except _DECODE_ERRORS as exc:
        raise _undecodable(path, exc) from exc
    with f:
        src_rate, channels = int(f.samplerate), int(f.channels)
        source_format = (f"{f.format_info}, {f.subtype_info}, {src_rate} Hz, "
                         f"{channels} channel{'s' if channels != 1 else ''}")
        if not _MIN_SOURCE_RATE <= src_rate <= _MAX_SOURCE_RATE or channels < 1:
            raise AudioError(f"{path}: cannot be decoded as audio "
                             f"(implausible header: {src_rate} Hz, {channels} channels)")
        max_frames = int(max_seconds * src_rate)
        # The header's frame count is only an estimate for some formats (MP3) and a lie in
        # corrupt files, so the limit is checked up front and again while decoding.
        if 0 < f.frames < (1 << 62) and f.frames > max_frames:
            raise _too_long(path, f.frames / src_rate, max_seconds)
        pcm, frames = _convert(f, path, src_rate, rate, max_frames, max_seconds)
    if frames == 0:
        raise AudioError(f"{path}: contains no audio (0 frames)")
    if len(pcm) == 0:
        raise AudioError(f"{path}: too short to play ({frames} frames at {src_rate} Hz)")
    return pcm, source_format


def _convert(f: sf.SoundFile, path: Path, src_rate: int, rate: int, max_frames: int,
             max_seconds: float) -> tuple[npt.NDArray[np.int16], int]:
    """Stream ``f`` through downmix and soxr; return the int16 samples and the frames decoded."""
    stream = None if src_rate == rate else soxr.ResampleStream(src_rate, rate, 1, dtype="float64")
    out: list[npt.NDArray[np.int16]] = [np.zeros(0, dtype=np.int16)]
    frames = 0
    while True:
        try:
            block = f.read(_BLOCK_FRAMES, dtype="float64", always_2d=True)
        except _DECODE_ERRORS as exc:  # corrupt data past a valid header
            raise _undecodable(path, exc) from exc
        n = len(block)
        frames += n
        if frames > max_frames:
            raise _too_long(path, None, max_seconds)
        if n == 0:  # end of file: flush what the resampler still holds
            if stream is not None and frames:
                out.append(_to_int16(stream.resample_chunk(np.zeros(0), last=True)))
            break
        # Float files may hold NaN/inf; left in, they would poison the resampler's whole window.
        mono = np.nan_to_num(block.mean(axis=1), nan=0.0, posinf=1.0, neginf=-1.0)
        if stream is not None:
            mono = stream.resample_chunk(mono)
        out.append(_to_int16(mono))
    return np.concatenate(out), frames


def _undecodable(path: Path, exc: BaseException) -> AudioError:
    # LibsndfileError's str() repeats the path; its error_string is just the reason.
    reason = exc.error_string if isinstance(exc, sf.LibsndfileError) else exc
    return AudioError(f"{path}: cannot be decoded as audio ({_one_line(reason)})")


def _to_int16(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int16]:
    """Scale [-1, 1) floats to int16 the way libsndfile reads them back (x * 32768), clipped."""
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def _too_long(path: Path, seconds: float | None, max_seconds: float) -> AudioError:
    length = f"{seconds:.1f} s long, " if seconds is not None else ""
    return AudioError(f"{path}: {length}longer than the limit of {max_seconds:g} s")


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _wav_bytes(pcm: npt.NDArray[np.int16], rate: int) -> bytes:
    """A plain RIFF/WAVE file: header, fmt (PCM 16-bit mono) and data, nothing else."""
    payload = pcm.astype("<i2").tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI",
                         b"RIFF", _HEADER_BYTES - 8 + len(payload), b"WAVE",
                         b"fmt ", 16, _WAVE_FORMAT_PCM, 1, rate, rate * 2, 2, 16,
                         b"data", len(payload))
    return header + payload


def _store(data: bytes, dest_dir: Path, name: str) -> Path:
    """Write ``data`` to ``dest_dir/name`` atomically (temporary file, fsync, rename)."""
    final = dest_dir / name
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=".import-", suffix=".tmp")
    except OSError as exc:
        raise AudioError(f"{dest_dir}: cannot write audio there ({_one_line(exc)})") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the daemon may run as another user
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AudioError(f"{final}: cannot write audio ({_one_line(exc)})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _check_normalised(path: Path) -> tuple[int, int]:
    """Validate ``path`` as a normalised WAV; return (sample rate, size of the data in bytes)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                raise AudioError(f"{path}: not a RIFF/WAVE file")
            (riff_size,) = struct.unpack("<I", head[4:8])
            if riff_size + 8 != size:
                raise AudioError(f"{path}: RIFF size {riff_size + 8} does not match "
                                 f"the file size {size}")
            rate: int | None = None
            data_bytes: int | None = None
            pos = 12
            while pos < size:
                f.seek(pos)
                chunk = f.read(8)
                if len(chunk) < 8:
                    raise AudioError(f"{path}: truncated chunk header at byte {pos}")
                cid, csize = struct.unpack("<4sI", chunk)
                name = cid.decode("latin-1")
                if csize == 0:
                    raise AudioError(f"{path}: zero-length {name!r} chunk at byte {pos}")
                end = pos + 8 + csize + (csize & 1)
                if end > size:
                    raise AudioError(f"{path}: chunk {name!r} runs past the end of the file")
                if cid == b"fmt " and rate is None and data_bytes is None:
                    rate = _check_fmt(path, csize, f.read(csize))
                elif cid == b"data" and rate is not None and data_bytes is None:
                    if csize % 2:
                        raise AudioError(f"{path}: data chunk of odd size {csize}")
                    data_bytes = csize
                else:
                    raise AudioError(f"{path}: unexpected {name!r} chunk at byte {pos} "
                                     "(only one fmt then one data chunk are allowed)")
                pos = end
    except OSError as exc:
        raise AudioError(f"{path}: cannot read ({_one_line(exc)})") from exc
    if rate is None or data_bytes is None:
        raise AudioError(f"{path}: missing {'fmt' if rate is None else 'data'} chunk")
    return rate, data_bytes


def _check_fmt(path: Path, csize: int, body: bytes) -> int:
    """Check a ``fmt `` chunk body is PCM 16-bit mono at a supported rate; return the rate."""
    if csize not in (16, 18) or len(body) != csize:
        raise AudioError(f"{path}: fmt chunk of unexpected size {csize}")
    tag, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", body[:16])
    if csize == 18 and body[16:18] != b"\0\0":
        raise AudioError(f"{path}: fmt chunk with extension data")
    if tag != _WAVE_FORMAT_PCM or bits != 16:
        raise AudioError(f"{path}: not 16-bit PCM (format tag {tag}, {bits} bits)")
    if channels != 1:
        raise AudioError(f"{path}: {channels} channels, not mono")
    if rate not in RATES:
        raise AudioError(f"{path}: sample rate {rate} Hz, not 8000 or 16000")
    if align != 2 or byte_rate != rate * 2:
        raise AudioError(f"{path}: inconsistent fmt chunk (block align {align}, "
                         f"byte rate {byte_rate})")
    return int(rate)
