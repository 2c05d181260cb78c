# One image for the coordinator, the workers and the dashboard.
#
#   docker build -t scalesweep .                     # CUDA torch: PyPI's Linux wheel (the default)
#   docker build -t scalesweep \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .   # CPU-only torch, far smaller
#
# A torch wheel dropped into docker/wheels/ is used in preference to any index (offline or CPU builds:
# --build-arg TORCH_SPEC=torch==2.13.0+cpu). BASE_IMAGE must provide python3 >= 3.11 with venv; both
# stages use it, so the venv's interpreter links resolve in the final stage.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- build: everything installed into /opt/venv -------------------------------------------------
FROM ${BASE_IMAGE} AS build
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

# torch first, in its own layer: by far the largest download, and it changes least often.
COPY docker/wheels/ /tmp/wheels/
RUN pip install --find-links /tmp/wheels ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"

# Then the project's dependencies (pyproject.toml) plus the extras the image serves (the dashboard
# service, `data fetch`, checkpoints on S3) at the versions of requirements.lock, the lock the Makefile and CI use;
# torch is this image's own (above). A code change reuses this layer.
ARG IMAGE_EXTRAS="dashboard fetch s3"
COPY pyproject.toml requirements.lock /src/
RUN python3 -c 'import sys, tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + [r for e in sys.argv[1:] for r in p["optional-dependencies"][e]]))' $IMAGE_EXTRAS \
        > /tmp/requirements.txt \
    && grep -v '^torch==' /src/requirements.lock > /tmp/constraints.txt \
    && pip install -c /tmp/constraints.txt -r /tmp/requirements.txt

# The project itself as a wheel, outside the venv: a code change then leaves the venv layers (GBs)
# cached in both stages, and only this small wheel is rebuilt and installed.
COPY README.md /src/
COPY sql /src/sql
COPY coordinator /src/coordinator
COPY worker /src/worker
RUN pip wheel --no-deps --wheel-dir /dist /src

# --- final: the venv on a clean base, run as a non-root user -------------------------------------
FROM ${BASE_IMAGE}
# psql, for `coordinator db shell` and ad-hoc queries from inside the cluster.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 scalesweep \
    && install -d -o scalesweep -g scalesweep /artifacts
# /artifacts: the checkpoint store the compose services share (a named volume takes this owner).
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SCALESWEEP_HOME=/home/scalesweep/.scalesweep
COPY --from=build /dist /tmp/dist
RUN pip install --no-cache-dir --no-deps --no-index /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && python3 -c "import coordinator.cli, worker, torch"
USER scalesweep
WORKDIR /home/scalesweep
CMD ["coordinator", "--help"]
