"""Render a stored transcript in each output format the API offers.

The shapes follow OpenAI's audio transcription API (``response_format``) so that existing
OpenAI clients can read Steno's output unchanged.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

import msgspec

from service.core.transcript import Transcript, TranscriptSegment

__all__ = ["LANGUAGE_NAMES", "MEDIA_TYPES", "TranscriptFormat", "language_name", "render"]


class TranscriptFormat(enum.StrEnum):
    """The output formats a transcript can be rendered in (OpenAI's ``response_format``)."""

    JSON = "json"
    VERBOSE_JSON = "verbose_json"
    TEXT = "text"
    SRT = "srt"
    VTT = "vtt"


# Whisper's language codes and names, copied as data from whisper.tokenizer.LANGUAGES because
# the service must not import whisper (it pulls in torch, which only GPU workers install).
LANGUAGE_NAMES: dict[str, str] = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}

_KNOWN_NAMES = frozenset(LANGUAGE_NAMES.values())

# The Content-Type each format is served with.
MEDIA_TYPES: dict[TranscriptFormat, str] = {
    TranscriptFormat.JSON: "application/json",
    TranscriptFormat.VERBOSE_JSON: "application/json",
    TranscriptFormat.TEXT: "text/plain; charset=utf-8",
    TranscriptFormat.SRT: "application/x-subrip; charset=utf-8",
    TranscriptFormat.VTT: "text/vtt; charset=utf-8",
}


def language_name(code: str) -> str:
    """Return the lower-case English name for a whisper language code, as OpenAI reports it.

    A value that is already a language name, or a code whisper does not know, is returned
    lower-cased rather than rejected: a stored transcript must always stay renderable.
    """
    key = code.strip().lower()
    if key in _KNOWN_NAMES:
        return key
    return LANGUAGE_NAMES.get(key, key)


def render(transcript: Transcript, fmt: TranscriptFormat) -> tuple[bytes, str]:
    """Render ``transcript`` as ``fmt``; return the body (UTF-8) and its media type.

    Rendering never fails on odd timings: negative, NaN or infinite times are clamped to 0,
    and a cue whose end precedes its start is shown as ending at its start.
    """
    return _RENDERERS[fmt](transcript), MEDIA_TYPES[fmt]


def _render_json(transcript: Transcript) -> bytes:
    if not _diarized(transcript):
        return msgspec.json.encode({"text": transcript.text})
    # A diarized transcript's plain JSON also says who spoke when, segment by segment.
    segments = [
        {
            "start": _seconds(s.start),
            "end": _seconds(s.end),
            "speaker": s.speaker,
            "text": s.text,
        }
        for s in transcript.segments
    ]
    return msgspec.json.encode({"text": transcript.text, "segments": segments})


def _diarized(transcript: Transcript) -> bool:
    return any(segment.speaker is not None for segment in transcript.segments)


def _render_verbose_json(transcript: Transcript) -> bytes:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language_name(transcript.language),
        "duration": _seconds(transcript.duration),
        "text": transcript.text,
        "segments": [_verbose_segment(segment) for segment in transcript.segments],
    }
    # OpenAI only includes "words" when word timestamps were requested; a transcript without
    # any words stands for "not requested", so the key is left out rather than sent empty.
    words = [word for segment in transcript.segments for word in segment.words or ()]
    if words:
        body["words"] = [
            {"word": word.word.strip(), "start": _seconds(word.start), "end": _seconds(word.end)}
            | ({"speaker": word.speaker} if word.speaker is not None else {})
            for word in words
        ]
    return msgspec.json.encode(body)


def _verbose_segment(segment: TranscriptSegment) -> dict[str, Any]:
    # OpenAI's typed clients declare these statistics as required numbers, so unknown values
    # become 0 / [] rather than null, which would fail their validation.
    fields: dict[str, Any] = {
        "id": segment.id,
        "seek": 0,
        "start": _seconds(segment.start),
        "end": _seconds(segment.end),
        "text": segment.text,
        "tokens": list(segment.tokens or ()),
        "temperature": _number(segment.temperature),
        "avg_logprob": _number(segment.avg_logprob),
        "compression_ratio": _number(segment.compression_ratio),
        "no_speech_prob": _number(segment.no_speech_prob),
    }
    if segment.speaker is not None:
        fields["speaker"] = segment.speaker
    if segment.words is not None:
        # Whisper's own shape: each segment's words with their probability.
        fields["words"] = [
            {
                "word": word.word.strip(),
                "start": _seconds(word.start),
                "end": _seconds(word.end),
                "probability": _number(word.probability),
            }
            | ({"speaker": word.speaker} if word.speaker is not None else {})
            for word in segment.words
        ]
    return fields


def _render_text(transcript: Transcript) -> bytes:
    if not _diarized(transcript):
        return (transcript.text.strip() + "\n").encode()
    # One "SPEAKER: ..." line per change of speaker.
    lines: list[tuple[str | None, list[str]]] = []
    for segment in transcript.segments:
        text = segment.text.strip()
        if not text:
            continue
        if lines and lines[-1][0] == segment.speaker:
            lines[-1][1].append(text)
        else:
            lines.append((segment.speaker, [text]))
    return "".join(f"{who}: {' '.join(parts)}\n" for who, parts in lines).encode()


def _render_srt(transcript: Transcript) -> bytes:
    blocks = [
        f"{number}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n\n"
        for number, (start, end, text) in enumerate(_cues(transcript, "{}: "), start=1)
    ]
    return "".join(blocks).encode()


def _render_vtt(transcript: Transcript) -> bytes:
    blocks = [
        f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n\n"
        for start, end, text in _cues(transcript, "<v {}>")
    ]
    return ("WEBVTT\n\n" + "".join(blocks)).encode()


def _cues(transcript: Transcript, speaker_mark: str = "") -> list[tuple[int, int, str]]:
    """Return (start ms, end ms, text) for each segment that has visible text.

    A diarized segment's text starts with ``speaker_mark`` filled in with its speaker.
    """
    cues: list[tuple[int, int, str]] = []
    for segment in transcript.segments:
        text = _cue_text(segment.text)
        if not text:
            continue
        if segment.speaker is not None:
            text = speaker_mark.format(segment.speaker) + text
        start = _milliseconds(segment.start)
        cues.append((start, max(start, _milliseconds(segment.end)), text))
    return cues


def _cue_text(text: str) -> str:
    # A blank line ends a cue and "-->" marks a timing line in both SRT and WebVTT, so either
    # inside the text would make players split or drop the cue.
    lines = (line.strip() for line in text.replace("-->", "->").splitlines())
    return "\n".join(line for line in lines if line)


def _milliseconds(seconds: float) -> int:
    # Rounding to whole milliseconds before splitting into fields is what keeps 59.9996 s
    # from rendering as "00:00:59,1000".
    if not math.isfinite(seconds) or seconds <= 0:
        return 0
    return round(seconds * 1000)


def _timestamp(milliseconds: int, separator: str) -> str:
    seconds, millis = divmod(milliseconds, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def _seconds(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


def _number(value: float | None) -> float:
    # JSON has no NaN; msgspec would write null, which typed clients reject.
    return value if value is not None and math.isfinite(value) else 0.0


_RENDERERS: dict[TranscriptFormat, Callable[[Transcript], bytes]] = {
    TranscriptFormat.JSON: _render_json,
    TranscriptFormat.VERBOSE_JSON: _render_verbose_json,
    TranscriptFormat.TEXT: _render_text,
    TranscriptFormat.SRT: _render_srt,
    TranscriptFormat.VTT: _render_vtt,
}
