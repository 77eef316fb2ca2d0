# One image for every service: workers, collector, producers and Flower differ only in their command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    WAVESHIELD_WEIGHTS_DIR=/weights WAVESHIELD_OUTPUT_DIR=/outputs
WORKDIR /app

# The default torch wheel on PyPI carries CUDA, so GPU workers need nothing else;
# pass --build-arg TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu" for a CPU-only image.
ARG TORCH_SPEC="torch torchvision"
RUN pip install $TORCH_SPEC

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY workers ./workers
COPY producers ./producers
RUN pip install . && useradd --create-home --uid 1000 waveshield && mkdir -p /weights /outputs \
    && chown waveshield /weights /outputs
COPY weights /weights

USER waveshield
CMD ["celery", "-A", "workers", "worker", "--loglevel", "INFO"]
