# llava-bot with a CUDA build of llama-cpp-python (GGML_CUDA=on).
#
#   docker build -t llava-bot --build-arg CUDA_ARCHITECTURES=89 .
#   docker run --gpus all -e DISCORD_TOKEN -v "$PWD/models:/models:ro" -v llava-state:/state \
#     --env-file docker/models/llava-1.5-7b.env llava-bot
#
# docker/models/NAME.env holds the [model] settings of each model that
# `llava-bot fetch-model NAME` downloads into ./models/NAME/ (NAME: see
# `llava-bot fetch-model --list`); or set LLAVA_BOT_MODEL__PATH and
# LLAVA_BOT_MODEL__MMPROJ yourself. Or `docker compose up -d`
# (docker-compose.yml; MODEL=NAME chooses the model). The Discord token comes from
# the environment at run time (DISCORD_TOKEN, or LLAVA_BOT_DISCORD__TOKEN): it
# is never written into the image, and llava-bot refuses a token in a file.
# Every setting can be given the same way (LLAVA_BOT_ prefix, "__" between
# levels); a settings file can be mounted at /app/config/bot.toml.
#
# The host needs an NVIDIA driver for CUDA 12.4 or newer and the NVIDIA
# Container Toolkit; no CUDA toolkit is needed on the host.

# -- build: compile llama-cpp-python against CUDA, install llava-bot into /opt/venv --
FROM nvidia/cuda:12.4.1-devel-ubuntu22.04 AS build

ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu 22.04's own python3.11 (universe), no third-party archive.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir --upgrade pip

# GPU architectures to compile the CUDA kernels for (a shorter list builds
# faster): 75 T4/RTX 20xx, 80 A100, 86 RTX 30xx/A10/A40, 89 RTX 40xx/L4/L40,
# 90 H100/H200.
ARG CUDA_ARCHITECTURES="86;89;90"
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
# The README's CUDA install line, plus:
#   CMAKE_CUDA_ARCHITECTURES  the GPUs above (there is no GPU to detect while building);
#   GGML_NATIVE=OFF           CPU code for any x86-64, not only the build machine's CPU;
#   --allow-shlib-undefined   libcuda.so.1 comes from the host driver at run time, so
#                             llama.cpp's tool executables cannot resolve it at link time
#                             (the same flag llama.cpp's own CUDA image uses).
# This layer comes before the project's files are copied: changing the bot
# does not recompile llama.cpp.
RUN CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES} -DGGML_NATIVE=OFF -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined" \
    pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot/ bot/
COPY cogs/ cogs/
# llama-cpp-python is already there (and satisfies the requirement): pip keeps
# the CUDA build. The check fails the build if the CUDA backend is missing
# (importing llama_cpp here would need the driver's libcuda.so.1, absent while building).
RUN pip install --no-cache-dir . \
    && if [ -z "$(find /opt/venv -name 'libggml-cuda*' -print -quit)" ]; then \
        echo "llama-cpp-python was built without its CUDA backend" >&2; exit 1; \
    fi

# -- runtime: CUDA runtime libraries, python3.11, the venv; no compilers --------------
FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04 AS runtime

ARG DEBIAN_FRONTEND=noninteractive
# libgomp1: llama.cpp's CPU code uses OpenMP; ca-certificates: HTTPS to Discord.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/venv /opt/venv

# /state belongs to the bot's user before it becomes a volume, so that a new
# named volume starts out writable by it.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/llava --shell /usr/sbin/nologin llava \
    && mkdir -p /models /state /app \
    && chown llava:llava /state

WORKDIR /app
COPY config/ config/

# DISCORD_TOKEN is deliberately not set here: pass it at run time (-e DISCORD_TOKEN).
# The metrics server listens on all interfaces inside the container so that
# it can be published (docker-compose.yml publishes it on 127.0.0.1 only).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLAVA_BOT_STATE__PATH=/state/journal.sqlite3 \
    LLAVA_BOT_CACHE_DIR=/state/cache \
    LLAVA_BOT_METRICS__HOST=0.0.0.0 \
    LLAVA_BOT_METRICS__PORT=9100

# The "llava" user created above; numeric, so that "run as non-root" checks can see it.
USER 10001:10001
# /models: the GGUF files (mount read-only); /state: the job journal (keep it
# across restarts so that questions accepted before a crash get answered).
VOLUME ["/models", "/state"]
EXPOSE 9100

# /healthz answers 200 only when the model is loaded and the Discord gateway
# is connected. The start period covers loading and warming up the model.
# Python, not curl: the image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=3).status == 200 else 1)"]

# SIGTERM (docker stop) lets the running answer finish and tells waiting
# askers to ask again; give it queue.shutdown_timeout_s plus a margin
# (docker stop -t 45; compose sets stop_grace_period).
ENTRYPOINT ["llava-bot"]
CMD ["run"]
