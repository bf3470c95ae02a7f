# The menu. Recipes use the project's virtualenv (.venv), created by the README's commands.
set shell := ["bash", "-euo", "pipefail", "-c"]
export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")

# list the recipes
default:
    @just --list

# generate a sample CSV + workbook and load them (embedded PostgreSQL unless BICONIC_PG_DSN is set)
demo:
    biconic demo

# the whole test suite (needs PostgreSQL on 127.0.0.1:5432, else an embedded one is started)
test *ARGS:
    python -m pytest -q {{ARGS}}

# quick tests only (skips the slow ones)
test-fast *ARGS:
    python -m pytest -q -m "not slow" {{ARGS}}

# 1M-row CSV and xlsx loads beside psql \copy, in this run (prints rows/s, peak RSS, ratios)
bench *ARGS:
    python bench/foundation.py {{ARGS}}

# ruff + mypy
lint:
    ruff check engine tests bench
    mypy engine

# start PostgreSQL, Redis and MariaDB if they are not running (what CI does first)
services:
    bash .ci/services
