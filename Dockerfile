# bnn-serve: binary CNN inference on CPUs.
#
#   docker build -t bnn-serve .
#   docker run --rm -p 8000:8000 bnn-serve
#
# Stages:
#   deps     python:3.11-slim + a virtualenv (/opt/venv) with the CPU build of torch and the
#            project's runtime dependencies (read from pyproject.toml, so this layer is cached until
#            the dependencies change); test binaries and C++ headers of torch are pruned here.
#   builder  python:3.11-slim + build-essential/cmake: builds the wheel (`pip wheel --no-deps .`).
#   core-aarch64  opt-in (--target core-aarch64 --build-arg BNN_CORE_AARCH64=1): the C++ core and
#            its tests cross-compiled for linux/arm64 and run under qemu-aarch64; see the stage.
#   runtime  python:3.11-slim, no compiler: the venv from `deps`, the wheel, model_store/, a non-root user.
#
# The CPU build of torch: on machines with the real python:3.11-slim pass
#   --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# (local versions such as 2.13.0+cpu satisfy torch==2.13.0 and are preferred). The sandbox's
# stand-in image already carries the CPU wheel as a pip find-links (/opt/wheels).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps
# Build-time only (not persisted in the image): pip reads it from the environment of RUN.
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# no pip inside the venv: the base image's pip installs into it (pip --python)
RUN python -m venv --without-pip /opt/venv
COPY pyproject.toml ./
# Runtime dependencies only (not the test/train extras). torch==2.13.0 resolves to 2.13.0+cpu (a
# local version sorts above the plain one) from /opt/wheels or PyTorch's CPU index.
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
 && pip --python /opt/venv/bin/python install --no-compile -r requirements.txt \
 && /opt/venv/bin/python -c 'import torch; assert "+cpu" in torch.__version__ or not torch.backends.cuda.is_built(), torch.__version__' \
 && T=$(/opt/venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))') \
 && rm -rf "$T/test" "$T/include" "$T/share/cmake" \
           "$T"/lib/libjitbackend_test.so "$T"/lib/libtorchbind_test.so \
           "$T"/lib/libbackend_with_compiler.so "$T"/lib/libaoti_custom_ops.so \
 && find "$T/bin" -mindepth 1 ! -name torch_shm_manager -exec rm -rf {} + \
 && find /opt/venv -depth -name __pycache__ -type d -exec rm -rf {} + \
 && PYTHONDONTWRITEBYTECODE=1 /opt/venv/bin/python -c 'import torch, numpy, fastapi, uvicorn, PIL; torch.ones(2).sum()'

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY native/ native/
COPY service/ service/
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && ls -l /wheels

# ---------------------------------------------------------------------------------------------
# core-aarch64 (opt-in, never part of the default image): the C++ core and its GoogleTest suites
# cross-compiled for linux/arm64 with Debian's g++-aarch64-linux-gnu and the project's toolchain
# file (native/cmake/aarch64-linux-gnu.toolchain.cmake), every suite then run under qemu-aarch64
# (NEON and portable paths, bit-exact against the reference); /out holds libbnn_core.a and bnn_tests:
#   docker build --target core-aarch64 --build-arg BNN_CORE_AARCH64=1 -t bnn-core-aarch64 .
# The legacy builder builds every stage before the target, so the default build passes through
# this one: without the build argument it does nothing (BuildKit skips it anyway).
FROM ${PYTHON_IMAGE} AS core-aarch64
ARG BNN_CORE_AARCH64=0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY native/ native/
# hadolint ignore=DL3008
RUN if [ "$BNN_CORE_AARCH64" != 1 ]; then echo "core-aarch64: skipped (--build-arg BNN_CORE_AARCH64=1 builds it)"; exit 0; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends cmake make g++-aarch64-linux-gnu qemu-user libgtest-dev \
 && rm -rf /var/lib/apt/lists/* \
 && TOOLCHAIN=/src/native/cmake/aarch64-linux-gnu.toolchain.cmake \
 && cmake -S /usr/src/googletest -B /tmp/gtest-build -DCMAKE_TOOLCHAIN_FILE="$TOOLCHAIN" -DCMAKE_BUILD_TYPE=Release \
          -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX=/opt/gtest-aarch64 \
 && cmake --build /tmp/gtest-build -j"$(nproc)" && cmake --install /tmp/gtest-build \
 && cmake -S native -B /tmp/core -DCMAKE_TOOLCHAIN_FILE="$TOOLCHAIN" -DCMAKE_BUILD_TYPE=Release \
          -DBNN_BUILD_TESTS=ON -DBNN_BUILD_PYTHON=OFF -DGTest_DIR=/opt/gtest-aarch64/lib/cmake/GTest \
 && cmake --build /tmp/core -j"$(nproc)" --target bnn_core bnn_tests \
 && qemu-aarch64 -L /usr/aarch64-linux-gnu /tmp/core/bnn_tests --gtest_brief=1 \
 && mkdir -p /out && cp /tmp/core/libbnn_core.a /tmp/core/bnn_tests /out/ \
 && rm -rf /tmp/gtest-build /tmp/core

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="bnn-serve" \
      org.opencontainers.image.description="Binary (1-bit) CNN inference on CPUs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BNN_MODEL_STORE=/app/model_store
RUN groupadd --gid 10001 bnn \
 && useradd --uid 10001 --gid bnn --home-dir /app --no-create-home --shell /usr/sbin/nologin bnn
COPY --from=deps /opt/venv /opt/venv
COPY --from=builder /wheels/ /tmp/wheels/
# Bytecode only for the modules the server imports when it starts (the root filesystem is
# read-only at run time, so nothing could be cached later): compiling all of site-packages would
# add ~160 MB, mostly for modules the server never imports (sympy, torch._inductor, ...).
RUN pip --python /opt/venv/bin/python install --no-deps --no-compile /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3.11/site-packages/service \
 && env -u PYTHONDONTWRITEBYTECODE /opt/venv/bin/python -c 'import torch.nn.functional, numpy, fastapi, starlette.middleware, pydantic_settings, uvicorn.main, uvicorn.protocols.http.h11_impl, uvicorn.lifespan.on, uvicorn.loops.asyncio, PIL.Image, PIL.PngImagePlugin, PIL.JpegImagePlugin, multipart, safetensors.torch, prometheus_client' \
 && (env -u PYTHONDONTWRITEBYTECODE /opt/venv/bin/python -c 'import service.__main__, service.api.main' || true)
WORKDIR /app
COPY --chown=root:root model_store/ /app/model_store/
USER 10001:10001
# 8000: HTTP; 8001: the Open Inference Protocol over gRPC (BNN_GRPC_PORT)
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["bnn-serve", "--host", "0.0.0.0", "--port", "8000"]
