# The worker image: every pod runs `python -m training.agent` (torchrun) or the Ray entrypoint
# from this image. It installs the project with the same step as the README (`make install`),
# into a virtualenv, on a CUDA base; pip resolves torch==2.13.0 to PyPI's CUDA build here.
#
# Not built in CI: the development machines have no Docker engine. Keep it in step with the
# Makefile's `install` target (the same extras, the same torch pin).
#
# RAY_VERSION is the Ray the image gets, pinned through a pip constraint and checked after the
# install. It must equal RAY_VERSION in launcher/targets/kubernetes/render.py, which every RayJob
# declares as `rayVersion` (KubeRay picks its pod probes by it); tests/test_render_lifecycle.py
# checks that the two agree and that pyproject.toml allows this version. wget is for KubeRay
# operators older than 1.6, whose Ray pod probes run `wget` whatever the Ray version.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
ARG RAY_VERSION=2.60.0

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VENV=/opt/dlaunch/.venv
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev make g++ git ca-certificates wget \
 && ln -sf /usr/bin/python3.11 /usr/local/bin/python3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dlaunch
COPY pyproject.toml Makefile README.md ./
COPY launcher ./launcher
COPY training ./training
RUN echo "ray==${RAY_VERSION}" > /tmp/ray-constraint.txt \
 && PIP_CONSTRAINT=/tmp/ray-constraint.txt make install VENV=$VENV EXTRAS=train,ray,kubernetes,compress \
 && $VENV/bin/python -c "import ray, sys; sys.exit(0 if ray.__version__ == '${RAY_VERSION}' else f'ray {ray.__version__} is not ${RAY_VERSION}')"

# Restricted Pod Security profile: a fixed non-root uid/gid at or above 10000 (never a node's
# user; launcher/targets/kubernetes/pods.py RUN_AS_USER). Pods mount the root filesystem
# read-only and write only to emptyDirs: /scratch (home, caches, the run directory) and /tmp.
RUN groupadd --gid 10001 dlaunch \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /scratch dlaunch \
 && mkdir -p /scratch && chown 10001:10001 /scratch
USER 10001:10001
WORKDIR /scratch
ENV PATH=$VENV/bin:$PATH \
    HOME=/scratch \
    XDG_CACHE_HOME=/scratch/.cache \
    HF_HOME=/scratch/.cache/huggingface \
    WANDB_DIR=/scratch
LABEL dev.dlaunch.ray-version=${RAY_VERSION}
ENTRYPOINT ["python", "-m", "training.run"]
