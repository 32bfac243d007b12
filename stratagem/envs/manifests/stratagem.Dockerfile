# stratagem's image: the base of every environment's Dockerfile (manifests/<name>/Dockerfile, and what
# `stratagem new-env` writes). Build it from the repository's root:
#   docker build -f stratagem/envs/manifests/stratagem.Dockerfile -t stratagem .
FROM python:3.11-slim
# The sandbox's seccomp filter goes through the system's libseccomp.
RUN apt-get update && apt-get install -y --no-install-recommends libseccomp2 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/stratagem
COPY pyproject.toml README.md ./
COPY stratagem ./stratagem
# The CPU build of torch first: an unpinned one pulls CUDA packages.
RUN pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir .
# OpenEnv's validator runs the image as uid 65532 with a read-only root and /tmp writable: everything
# stratagem writes (its per-container secret, caches) goes there.
ENV HOME=/tmp STRATAGEM_CACHE=/tmp/stratagem MPLCONFIGDIR=/tmp/matplotlib PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000
