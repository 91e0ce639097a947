# A Python 3.11 base built from Debian bookworm packages, standing in for python:3.11-slim where no
# registry can be reached. The runtime's dependencies come from Debian so pip needs no network later.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3 python3-pip python3-numpy python3-yaml python3-pika python3-redis \
      python3-threadpoolctl python3-boto3 procps \
 && ln -sf /usr/bin/python3 /usr/local/bin/python \
 && rm -rf /var/lib/apt/lists/*
# Debian marks its Python as externally managed; this image exists to be pip-installed into.
ENV PIP_BREAK_SYSTEM_PACKAGES=1
CMD ["python3"]
