"""``bench-results/summary.md``: issue 13's ratios in one table, from the benchmarks' JSON files.

Every ratio is measured side by side inside one benchmark (each starts its own reference), so
the table compares nothing across runs; each row names the file and when it was measured.
A benchmark that has not run yet (no JSON file) shows as "not run".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Figures = dict[str, Any]


@dataclass(frozen=True)
class Row:
    """One line of the table: what, Steno's figure, the reference, the ratio, the goal."""

    what: str
    steno: str
    reference: str
    ratio: str
    goal: str
    met: bool | None


def _poll(f: Figures) -> list[Row]:
    ratio = f["ratio_api_to_bare"]
    return [
        Row(
            f"`GET /v1/jobs/{{id}}` with key check, granian 1 worker, {f['concurrency']} "
            "connections (median of rounds)",
            f"{f['api_req_per_s']['median']:,.0f} req/s",
            f"bare Litestar + asyncpg `fetchrow` + msgspec: {f['bare_req_per_s']['median']:,.0f}"
            " req/s",
            f"{ratio['min']:.2f}-{ratio['max']:.2f}x bare",
            ">= 0.6x bare",
            ratio["min"] >= 0.6,
        )
    ]


def _batching(f: Figures) -> list[Row]:
    rows = []
    sequential = f["warm_sequential"]
    reference = f.get("reference_wall_seconds", sequential["wall_seconds"])
    runs = "the faster of two runs; " if "warm_sequential_again" in f else ""
    fw = f.get("faster_whisper_int8", {})
    batch = f["batch_size"]
    for name, label in (
        ("stack_batching_off", "whole stack, batching off"),
        ("stack_batching_on", f"whole stack, batching on (batch {batch})"),
        (
            "stack_batching_on_full_windows",
            f"whole stack, batching on (batch {batch}), 30 s windows (padding kept)",
        ),
        ("warm_sequential_int8_trimmed", "in process, sequential, int8 MLPs, padding trimmed"),
        ("in_process_batched", f"in process, batched windows (batch {batch}), float32"),
        ("in_process_batched_int8", f"in process, batched windows (batch {batch}), int8 MLPs"),
        (
            "in_process_batched_int8_trimmed",
            f"in process, batched windows (batch {batch}), int8 MLPs, padding trimmed",
        ),
    ):
        row = f.get(name)
        if not row:
            continue
        beats_fw = "wall_seconds" in fw and row["wall_seconds"] < fw["wall_seconds"]
        same_wer = abs(row["word_error_rate_mean"] - sequential["word_error_rate_mean"]) <= 0.02
        fw_text = (
            f"; faster-whisper int8 {fw['wall_seconds']} s (WER {fw['word_error_rate_mean']})"
            if "wall_seconds" in fw
            else ""
        )
        rows.append(
            Row(
                f"{f['clips']} short clips ({f['model']}), {label}, until all complete",
                f"{row['wall_seconds']} s (WER {row['word_error_rate_mean']})",
                f"warm sequential `model.transcribe` {reference} s "
                f"({runs}WER {sequential['word_error_rate_mean']}){fw_text}",
                f"{row['speedup_vs_warm_sequential']}x sequential"
                + (
                    f", {fw['wall_seconds'] / row['wall_seconds']:.2f}x faster-whisper"
                    if fw_text
                    else ""
                ),
                ">= 1.5x sequential, faster than faster-whisper int8, WER ±0.02",
                row["speedup_vs_warm_sequential"] >= 1.5 and beats_fw and same_wer,
            )
        )
    long = f.get("long_files")
    if long:
        rows.append(
            Row(
                f"{long['files']} files of about {long['seconds_per_file']} s ({f['model']}), "
                f"in process, batched windows (batch {batch}), int8 MLPs, until all complete",
                f"{long['batched']['wall_seconds']} s (WER "
                f"{long['batched']['word_error_rate_mean']}; batches "
                f"{long['batched']['batch_sizes']})",
                f"the same files one after another: {long['sequential']['wall_seconds']} s "
                f"(WER {long['sequential']['word_error_rate_mean']})",
                f"{long['batched']['speedup_vs_sequential']}x sequential",
                "—",
                None,
            )
        )
    return rows


def _arq(f: Figures) -> list[Row]:
    rows = []
    for run in f["runs"]:
        if run["job"] != "http" or run["concurrency"] < 50:
            continue
        steno = run["steno"]["jobs_per_second"]
        ideal = run["ideal_jobs_per_second"]
        references = {"arq 0.26": run["arq"]["jobs_per_second"]}
        if "arq_tuned" in run:
            references["arq 0.26, poll_delay 0.01 s"] = run["arq_tuned"]["jobs_per_second"]
        # Twice a reference that already runs above half the ideal would be above the ideal,
        # which no implementation reaches (C jobs of 100 ms at a time): there the goal is to
        # be faster than it.
        beyond = [name for name, value in references.items() if 2 * value > ideal]
        goal = ">= 0.8x ideal and >= 2x arq"
        if beyond:
            goal += f" (2x {' and '.join(beyond)} is above the ideal: faster than it instead)"
        rows.append(
            Row(
                f"arq-layer jobs awaiting a 100 ms HTTP response, C={run['concurrency']}, "
                f"N={run['jobs']}",
                f"{steno:g} jobs/s",
                "; ".join(f"{name}: {value:g}/s" for name, value in references.items())
                + f"; ideal {ideal:g}/s",
                f"{steno / ideal:.2f}x ideal, "
                + ", ".join(f"{steno / value:.2f}x {name}" for name, value in references.items()),
                goal,
                steno >= 0.8 * ideal
                and all(
                    steno > value if name in beyond else steno >= 2 * value
                    for name, value in references.items()
                ),
            )
        )
    return rows


def _sse(f: Figures) -> list[Row]:
    rounds = {name: f[name] for name in f if name == "api" or name.startswith("api-")}
    bare = f.get("bare", {}).get("publish_to_receive_ms", {})
    rows = []
    for name, run in rounds.items():
        latency = run["publish_to_receive_ms"]
        rows.append(
            Row(
                f"SSE, {f['clients']:,} streams on one API process, {f['jobs']} jobs x "
                f"{f['events_per_second_per_job']} events/s ({name})",
                f"p50 {latency['p50']} ms, p99 {latency['p99']} ms, "
                f"{100 * run['delivered_share']:.1f} % delivered",
                f"bare shared-subscription fan-out: p50 {bare['p50']} ms, p99 {bare['p99']} ms"
                if bare
                else "-",
                f"{latency['p99'] / bare['p99']:.2f}x bare p99" if bare else "-",
                "p99 < 100 ms",
                latency["p99"] < 100 and run["delivered_share"] >= 0.999,
            )
        )
    return rows


def _submit(f: Figures) -> list[Row]:
    rows = []
    for fmt in ("wav", "ogg"):
        if fmt not in f:
            continue
        p50 = f[fmt]["p50_s"]
        rows.append(
            Row(
                f"20 concurrent uploads ({fmt.upper()}), submit latency",
                f"p50 {p50['median']} s (rounds {p50['min']}-{p50['max']} s)",
                "—",
                "—",
                "p50 < 0.3 s",
                p50["median"] < 0.3,
            )
        )
    return rows


def _padding(f: Figures) -> list[Row]:
    full, trimmed = f["full_windows"], f["trimmed"]
    change = trimmed["word_error_rate_mean"] - full["word_error_rate_mean"]
    return [
        Row(
            f"{f['clips']} other clips ({f['model']}, five voices, 1-15 s), windows trimmed "
            "(the default), one after another",
            f"{trimmed['wall_seconds']} s (WER {trimmed['word_error_rate_mean']}; better on "
            f"{f['trimmed_better']} clips, worse on {f['trimmed_worse']})",
            f"30 s windows: {full['wall_seconds']} s (WER {full['word_error_rate_mean']})",
            f"{f['speedup_trimmed']}x, WER {change:+.3f}",
            "WER ±0.02",
            abs(change) <= 0.02 or change < 0,
        )
    ]


SOURCES: dict[str, Callable[[Figures], list[Row]]] = {
    "poll": _poll,
    "batching": _batching,
    "padding": _padding,
    "arq_concurrency": _arq,
    "sse": _sse,
    "submit": _submit,
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_summary(results: Path) -> Path:
    """Write ``summary.md`` in ``results`` from the JSON files there; returns its path."""
    lines = [
        "# Steno benchmarks: issue 13's ratios",
        "",
        "Each ratio is measured side by side within one benchmark run (the reference is "
        "started by the benchmark itself); `just bench NAME` refreshes one row's file.",
        "",
        "| what | Steno | reference (same run) | ratio | goal | met | from |",
        "|---|---|---|---|---|---|---|",
    ]
    machine = None
    for name, rows_of in SOURCES.items():
        path = results / f"{name}.json"
        if not path.exists():
            lines.append(f"| `{name}` | not run | | | | | `just bench {name}` |")
            continue
        figures = json.loads(path.read_text())
        machine = machine or figures.get("machine")
        when = figures.get("measured_at", "")
        for row in rows_of(figures):
            met = {True: "yes", False: "**no**", None: "—"}[row.met]
            cells = [row.what, row.steno, row.reference, row.ratio, row.goal, met]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + f" | `{name}.json` {when} |")
    if machine:
        lines += [
            "",
            f"Machine: {machine.get('platform')}, Python {machine.get('python')}, "
            f"{machine.get('cpus', '?')} CPUs, {machine.get('gpu', 'no GPU')}.",
        ]
    out = results / "summary.md"
    out.write_text("\n".join(lines) + "\n")
    return out
