# The Cuttlefish runtime: one image for every role, chosen by its command
#   python3 -m neuron ...             one neuron
#   python3 -m orchestrator train ... the driver
# PYTHON_IMAGE defaults to the official image; compose/build-images.sh builds a stand-in from Debian.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_CACHE_DIR=1 PYTHONPATH=/app
RUN python3 -m pip install --quiet "numpy>=1.24" "pyyaml>=5.4" "threadpoolctl>=3.1" "pika>=1.2" "redis>=4.3"
WORKDIR /app
COPY neuron /app/neuron
COPY broker /app/broker
COPY paramstore /app/paramstore
COPY orchestrator /app/orchestrator
COPY compose /app/compose
COPY examples /app/examples
CMD ["python3", "-m", "neuron"]
