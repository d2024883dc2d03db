"""One typed settings object, read once from ``STENO_*`` environment variables.

Every process (API, workers, CLI) builds it once at start and passes it down; nothing else
in the code base reads the environment.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

_PREFIX = "STENO_"


class SettingsError(ValueError):
    """A ``STENO_*`` variable holds a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Steno's configuration; field ``foo_bar`` is read from ``STENO_FOO_BAR``."""

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/steno"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Celery's broker; empty means "the same Redis as redis_url".
    broker_url: str = ""
    host: str = "127.0.0.1"
    # The key the `steno` client commands (submit, watch, jobs ls) present; the API never
    # reads it (it checks keys against PostgreSQL).
    api_key: str = ""
    port: int = 8000
    data_dir: Path = Path("var")
    # Empty means data_dir/audio and data_dir/models.
    storage_dir: Path | None = None
    model_dir: Path | None = None
    whisper_model: str = "tiny.en"
    whisper_device: str = "auto"
    # On the CPU, the MLP layers of Whisper's audio encoder run int8, one window at a time
    # (PyTorch dynamic quantization; workers/gpu/quantize.py): about 1.1-1.2x faster with
    # the same word error rate (`just bench batching`). Off keeps openai-whisper's float32
    # throughout. No effect on a GPU (fp16 there).
    whisper_cpu_int8: bool = True
    # Whisper's encoder skips most of a short window's zero padding: it encodes the window's
    # content and at least 2 s of padding, as 15 s when that fits, else 30 s
    # (workers/gpu/padding.py). The last window of every file is shorter than 30 s, so short
    # files gain most (1.3x in process on 2 CPU cores). The word error rate stayed within
    # noise of 30 s windows over 246 espeak-ng clips (better on one set, 0.008 worse on the
    # other); off encodes every window as 30 s, as openai-whisper does.
    whisper_trim_padding: bool = True
    # Extra models a job may ask for (each GPU child loads one lazily on first use).
    extra_models: tuple[str, ...] = ()
    max_upload_bytes: int = 200 * 1024 * 1024
    max_audio_seconds: float = 4 * 3600.0
    fetch_timeout_seconds: float = 60.0
    # The API checks an audio_url answers before accepting the job; 0 turns the check off.
    url_check_timeout_seconds: float = 5.0
    # CIDRs or host names every outbound request may reach although they are private,
    # loopback or link-local (tests, on-premises storage); see service.core.egress.
    egress_allow: tuple[str, ...] = ()
    # The egress's HTTP transport under httpx's API: "aiohttp" (httpx-aiohttp on a pinned
    # aiohttp connector, about 4x less CPU per request) or "httpcore" (httpx's own).
    egress_transport: str = "aiohttp"
    db_pool_size: int = 20
    io_concurrency: int = 200
    gpu_concurrency: int = 1
    # Batched inference (workers/gpu/batching): above 1, the GPU worker is one process with
    # twice this many task threads sharing one model (gpu_task_slots), and their 30 s windows
    # are decoded together in batches of up to this size; 1 keeps the prefork pool (one job
    # per child).
    gpu_batch_size: int = 1
    # How long a lone window waits for others to join its batch.
    gpu_batch_flush_ms: float = 20.0
    # Hard time limit of a transcription is base + factor * audio seconds.
    transcribe_time_limit_base: float = 300.0
    transcribe_time_limit_factor: float = 2.0
    max_attempts: int = 3
    # A running job's claim lasts this long unless its worker renews it (every quarter);
    # a worker that died is noticed within about this time.
    lease_seconds: float = 60.0
    # A queued job untouched this long gets its task message sent again (a message can be
    # lost with Redis, or consumed by a task that gave up); duplicates are harmless.
    redrive_after_seconds: float = 3600.0
    # Per-owner fairness on the GPU lanes: at most this many of one owner's transcriptions
    # wait in each lane's broker queue; the rest wait in PostgreSQL (held outbox rows) and
    # are released round-robin as those start (service.core.fairness). 0 turns it off.
    # Keep it at least the number of GPU children, or one owner alone can't fill them.
    fair_share_per_owner: int = 4
    outbox_sweep_seconds: float = 5.0
    outbox_grace_seconds: float = 2.0
    publish_timeout_seconds: float = 3.0
    # Retention (beat's retention sweep, every retention_sweep_seconds): a finished job's audio
    # is deleted this long after it finished, the job itself (transcript, events) after
    # retain_jobs_seconds; 0 keeps them forever.
    retain_audio_seconds: float = 7 * 86400.0
    retain_jobs_seconds: float = 0.0
    retention_sweep_seconds: float = 60.0
    # Progress events: each job's Redis Stream keeps about this many entries, and expires
    # this long after its last event (milestones also live in PostgreSQL).
    events_maxlen: int = 5000
    events_ttl_seconds: int = 86400
    # Server-Sent Events: a comment line this often, a client that takes longer than the send
    # timeout to accept a write is dropped, and one API key may hold this many streams open
    # (counted in Redis, across every API process).
    sse_heartbeat_seconds: float = 15.0
    sse_send_timeout_seconds: float = 30.0
    sse_max_streams_per_key: int = 32
    # Job submissions one API key may make in any minute (a sliding window in Redis); 0 turns the
    # limit off.
    submits_per_minute: int = 120
    # How long an OpenAI-compatible request (/v1/audio/*) waits for its job before answering
    # 504 with the job's id; below the openai client's 600 s read timeout, so that the client
    # gets the answer instead of timing out and sending the audio again.
    openai_wait_seconds: float = 540.0
    # Webhooks (service.core.webhooks): each attempt's time limit; attempts per event, the
    # backoff between them (base * 2^n up to the cap, with jitter: about a day in all); how
    # long a rotated secret still signs beside the new one; the Fernet keys sealing signing
    # secrets in PostgreSQL (comma list: the first seals, any opens; empty: stored unsealed).
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 15
    webhook_retry_base_seconds: float = 10.0
    webhook_retry_max_seconds: float = 6 * 3600.0
    webhook_secret_grace_seconds: float = 86400.0
    webhook_secrets_key: tuple[str, ...] = field(default=(), repr=False)
    # How long an Idempotency-Key on POST /v1/jobs keeps answering with its job.
    idempotency_ttl_seconds: float = 86400.0
    log_level: str = "INFO"
    # Operations (README "Metrics and operations"). ``text`` or ``json`` (one object per line).
    log_format: str = "text"
    # Where each process family keeps its Prometheus files: a local disk of the host, never a
    # shared volume (files are named by pid). Empty means <temp dir>/steno-metrics-<uid>.
    metrics_dir: Path | None = None
    # The port each worker pool's Prometheus exporter listens on (on ``host``); 0: none.
    io_metrics_port: int = 9101
    gpu_metrics_port: int = 9102
    # Celery task events (what Flower shows): workers send them and producers send task-sent.
    task_events: bool = True
    flower_port: int = 5555
    # Redis visibility timeout; 0 means twice the longest hard time limit. Anything shorter
    # than that is refused at startup: a live task would be handed out a second time.
    visibility_timeout_seconds: float = 0.0
    # Fault-injection hooks for the chaos suite (tests/chaos); all off by default.
    # Seconds a GPU child waits (lease kept, cancellation checked each second) before Whisper.
    transcribe_delay_seconds: float = 0.0
    # The same wait once diarization has begun (its progress at 0 %), before its models run.
    diarize_delay_seconds: float = 0.0
    # A GPU child that claims a job whose filename contains this text SIGKILLs itself.
    fault_crash_marker: str = ""
    # Accept a visibility timeout shorter than the rule above (to provoke redeliveries).
    fault_allow_short_visibility: bool = False

    @property
    def models(self) -> tuple[str, ...]:
        """Every model a job may name; the first is the default."""
        return (self.whisper_model, *(m for m in self.extra_models if m != self.whisper_model))

    @property
    def gpu_task_slots(self) -> int:
        """Jobs one GPU worker runs at once: its prefork children; with batching on, task
        threads for two batches, so that the next batch's jobs claim, load their audio and
        queue their windows while one batch decodes (with one batch's worth, batches came
        out half full, alternating with the jobs still getting ready)."""
        return 2 * self.gpu_batch_size if self.gpu_batch_size > 1 else self.gpu_concurrency

    @property
    def broker(self) -> str:
        """The Celery broker URL."""
        return self.broker_url or self.redis_url

    @property
    def audio_dir(self) -> Path:
        """Where uploaded and fetched audio is stored."""
        return self.storage_dir or self.data_dir / "audio"

    @property
    def models_dir(self) -> Path:
        """Where converted Whisper checkpoints live."""
        return self.model_dir or self.data_dir / "models"

    @property
    def metrics_root(self) -> Path:
        """Where the process families keep their Prometheus files (one folder each)."""
        return self.metrics_dir or Path(tempfile.gettempdir()) / f"steno-metrics-{os.getuid()}"

    @property
    def max_time_limit(self) -> float:
        """The longest hard time limit any task can get (for the longest allowed audio)."""
        return max(
            self.fetch_time_limit,
            self.transcribe_time_limit_base
            + self.transcribe_time_limit_factor * self.max_audio_seconds,
        )

    @property
    def min_visibility_timeout(self) -> int:
        """The shortest visibility timeout allowed: twice the longest hard time limit."""
        return math.ceil(2 * self.max_time_limit)

    @property
    def visibility_timeout(self) -> int:
        """Redis visibility timeout: by default twice the longest hard limit, so no live task
        is redelivered (a shorter one is refused at startup, see ``load_settings``)."""
        if self.visibility_timeout_seconds > 0:
            return int(self.visibility_timeout_seconds)
        return self.min_visibility_timeout

    @property
    def fetch_deadline(self) -> float:
        """Longest a whole download may take (httpx's timeout applies per read, not in all)."""
        return 10 * self.fetch_timeout_seconds

    @property
    def fetch_time_limit(self) -> float:
        """Hard time limit of the fetch task: the download deadline plus time to probe/store."""
        return self.fetch_deadline + 120.0

    def transcribe_time_limit(self, audio_seconds: float | None) -> float:
        """Hard time limit for transcribing audio of this length."""
        seconds = audio_seconds if audio_seconds is not None else self.max_audio_seconds
        return self.transcribe_time_limit_base + self.transcribe_time_limit_factor * seconds

    def as_env(self) -> dict[str, str]:
        """These settings as ``STENO_*`` variables, for child processes."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            env[_PREFIX + f.name.upper()] = str(value)
        return env


def _convert(name: str, raw: str, annotation: Any) -> Any:
    text = str(annotation)
    try:
        if annotation is int:
            return int(raw)
        if annotation is float:
            return float(raw)
        if annotation is bool:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if "Path" in text:
            return Path(raw) if raw else None
        if "tuple" in text:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise SettingsError(f"{_PREFIX}{name.upper()}={raw!r}: {exc}") from exc
    return raw


_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)


def _egress_entry_ok(entry: str) -> bool:
    """A CIDR or address, or an ASCII host name (the forms ``STENO_EGRESS_ALLOW`` takes)."""
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        labels = entry.removesuffix(".").split(".")
        return len(entry) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
    return True


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``STENO_*`` variables (``os.environ`` by default) and overrides."""
    env = os.environ if environ is None else environ
    hints = get_type_hints(Settings)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = _PREFIX + f.name.upper()
        if key in env:
            values[f.name] = _convert(f.name, env[key], hints[f.name])
    values.update(overrides)
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if settings.max_upload_bytes <= 0:
        raise SettingsError("STENO_MAX_UPLOAD_BYTES must be positive")
    if settings.max_audio_seconds <= 0:
        raise SettingsError("STENO_MAX_AUDIO_SECONDS must be positive")
    device = settings.whisper_device.strip().lower()
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise SettingsError(
            f"STENO_WHISPER_DEVICE={settings.whisper_device!r}: use auto, cpu, cuda or cuda:N"
        )
    if settings.log_format not in ("text", "json"):
        raise SettingsError(f"STENO_LOG_FORMAT={settings.log_format!r}: use text or json")
    if settings.lease_seconds < 4:
        raise SettingsError("STENO_LEASE_SECONDS must be at least 4")
    if settings.fair_share_per_owner < 0:
        raise SettingsError("STENO_FAIR_SHARE_PER_OWNER must be 0 (off) or more")
    if settings.max_attempts < 1:
        raise SettingsError("STENO_MAX_ATTEMPTS must be at least 1")
    if settings.events_maxlen < 100 or settings.events_ttl_seconds < 60:
        raise SettingsError("STENO_EVENTS_MAXLEN must be >= 100 and STENO_EVENTS_TTL_SECONDS >= 60")
    if settings.sse_heartbeat_seconds <= 0 or settings.sse_send_timeout_seconds <= 0:
        raise SettingsError("STENO_SSE_HEARTBEAT_SECONDS and _SEND_TIMEOUT_SECONDS must be > 0")
    if settings.sse_max_streams_per_key < 1:
        raise SettingsError("STENO_SSE_MAX_STREAMS_PER_KEY must be at least 1")
    if settings.submits_per_minute < 0:
        raise SettingsError("STENO_SUBMITS_PER_MINUTE must not be negative")
    if settings.openai_wait_seconds <= 0:
        raise SettingsError("STENO_OPENAI_WAIT_SECONDS must be positive")
    _validate_webhooks(settings)
    if settings.egress_transport not in ("aiohttp", "httpcore"):
        raise SettingsError(
            f"STENO_EGRESS_TRANSPORT={settings.egress_transport!r}: use aiohttp or httpcore"
        )
    for entry in settings.egress_allow:
        if not _egress_entry_ok(entry):
            raise SettingsError(
                f"STENO_EGRESS_ALLOW: {entry!r} is neither a CIDR/address nor a host name"
            )
    if min(settings.retain_audio_seconds, settings.retain_jobs_seconds) < 0:
        raise SettingsError("STENO_RETAIN_AUDIO_SECONDS and _JOBS_SECONDS must not be negative")
    if settings.retention_sweep_seconds <= 0:
        raise SettingsError("STENO_RETENTION_SWEEP_SECONDS must be positive")
    if settings.gpu_batch_size < 1 or settings.gpu_batch_flush_ms < 0:
        raise SettingsError("STENO_GPU_BATCH_SIZE must be >= 1, _FLUSH_MS not negative")
    if settings.transcribe_delay_seconds < 0 or settings.diarize_delay_seconds < 0:
        raise SettingsError("STENO_TRANSCRIBE_DELAY_SECONDS must not be negative")
    shortest = settings.min_visibility_timeout
    if settings.visibility_timeout < shortest and not settings.fault_allow_short_visibility:
        raise SettingsError(
            f"STENO_VISIBILITY_TIMEOUT_SECONDS={settings.visibility_timeout_seconds:g} is "
            f"shorter than twice the longest hard time limit ({shortest:g} s): Redis would "
            "hand a task that is still running to a second worker. Raise it, or lower "
            "STENO_MAX_AUDIO_SECONDS / STENO_TRANSCRIBE_TIME_LIMIT_* / "
            "STENO_FETCH_TIMEOUT_SECONDS."
        )


def _validate_webhooks(settings: Settings) -> None:
    if settings.webhook_timeout_seconds <= 0 or settings.webhook_max_attempts < 1:
        raise SettingsError(
            "STENO_WEBHOOK_TIMEOUT_SECONDS must be > 0 and STENO_WEBHOOK_MAX_ATTEMPTS >= 1"
        )
    if not 0 < settings.webhook_retry_base_seconds <= settings.webhook_retry_max_seconds:
        raise SettingsError(
            "STENO_WEBHOOK_RETRY_BASE_SECONDS must be > 0 and at most _RETRY_MAX_SECONDS"
        )
    if settings.webhook_secret_grace_seconds < 0 or settings.idempotency_ttl_seconds <= 0:
        raise SettingsError(
            "STENO_WEBHOOK_SECRET_GRACE_SECONDS must be >= 0, STENO_IDEMPOTENCY_TTL_SECONDS > 0"
        )
    for key in settings.webhook_secrets_key:
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) != 32:
            # The value itself stays out of the message: it is a secret.
            raise SettingsError(
                "STENO_WEBHOOK_SECRETS_KEY: each entry must be a Fernet key (32 bytes, "
                "url-safe base64), e.g. from python -c 'from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())'"
            )
