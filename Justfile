# The menu. Recipes use the project's virtualenv (.venv), created by the README's commands.
set shell := ["bash", "-euo", "pipefail", "-c"]
export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")

# list the recipes
default:
    @just --list

# generate a sample CSV + workbook and load them (embedded PostgreSQL unless BICONIC_PG_DSN is set)
demo:
    biconic demo

# the HTTP API on the embedded default (or BICONIC_PG_DSN): http://127.0.0.1:8000/docs; imports run on `just worker`
serve *ARGS:
    biconic serve {{ARGS}}

# a worker taking the queued imports (embedded Redis unless BICONIC_BROKER_URL is set)
worker *ARGS:
    biconic worker {{ARGS}}

# the whole test suite (needs PostgreSQL on 127.0.0.1:5432, else an embedded one is started)
test *ARGS:
    python -m pytest -q {{ARGS}}

# quick tests only (skips the slow ones)
test-fast *ARGS:
    python -m pytest -q -m "not slow" {{ARGS}}

# speed bar, 1M rows (about 10 min): engine CSV/Parquet/xlsx with and without archive, --spec, psql \copy, the append beside 5M rows of
# other connections, ADBC, dlt, pandas, fastexcel, a 10M-row peak-RSS run, queries; then the Speed bar II table (issue 17)
bench *ARGS:
    pip install -q -e '.[bench]'
    python bench/run.py --rows 1000000 --runs 3 --peer-runs 1 --pandas-rows 10000 --dlt-default-rows 100000 --lean --rss-rows 10000000 {{ARGS}}

# the same at 10M and 100M rows (100M: CSV only, in-memory peers capped at 10M); LONG: about 3 hours, ~12 GB of files
bench-full *ARGS:
    pip install -q -e '.[bench]'
    python bench/run.py --rows 10000000 --rows 100000000 --runs 3 --peer-runs 3 --pandas-rows 100000 --dlt-default-rows 1000000 {{ARGS}}

# micro-benchmarks (pytest-benchmark): spec compile, validation on 1M rows, Arrow batch handling
bench-micro *ARGS:
    pip install -q -e '.[bench]'
    python -m pytest bench/micro --benchmark-only -q {{ARGS}}

# the job queue under load (about 10 min): 100 imports of 100k rows submitted at once to `biconic worker --concurrency 2`
# beside `biconic load` one by one and `psql \copy`, then 10M rows in 10 files over 1 vs 2 worker processes
bench-jobs *ARGS:
    python bench/jobs.py {{ARGS}}

# the HTTP API under 50 concurrent clients (GET an import, a cached and a computed query) and a 1 GB tus upload
bench-api *ARGS:
    python bench/api.py {{ARGS}}

# ruff + mypy + the house rules (folder layers, module/class/function sizes)
lint:
    ruff check engine tests bench
    mypy engine
    python -m engine.tools.imports

# start PostgreSQL, Redis and MariaDB if they are not running (what CI does first)
services:
    bash .ci/services
