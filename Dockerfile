# The worker image: every pod runs `python -m training.agent` (torchrun) or the Ray entrypoint
# from this image. It installs the project with the same step as the README (`make install`),
# into a virtualenv, on a CUDA base; pip resolves torch==2.13.0 to PyPI's CUDA build here.
#
# Not built in CI: the development machines have no Docker engine. Keep it in step with the
# Makefile's `install` target (the same extras, the same torch pin).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VENV=/opt/dlaunch/.venv
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev make g++ git ca-certificates \
 && ln -sf /usr/bin/python3.11 /usr/local/bin/python3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dlaunch
COPY pyproject.toml Makefile README.md ./
COPY launcher ./launcher
COPY training ./training
RUN make install VENV=$VENV EXTRAS=train,ray,kubernetes,compress

# Restricted Pod Security profile: a fixed non-root uid, no writes outside /workspace and /tmp.
RUN useradd --uid 1000 --create-home --home-dir /workspace dlaunch
USER 1000:1000
WORKDIR /workspace
ENV PATH=$VENV/bin:$PATH \
    HF_HOME=/workspace/.cache/huggingface \
    WANDB_DIR=/workspace
ENTRYPOINT ["python", "-m", "training.run"]
