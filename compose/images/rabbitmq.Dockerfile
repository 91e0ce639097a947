# RabbitMQ from Debian bookworm packages, standing in for the official rabbitmq image where no registry
# can be reached. It honours the official image's RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/*
COPY compose/images/rabbitmq-entrypoint.sh /usr/local/bin/rabbitmq-entrypoint.sh
VOLUME /var/lib/rabbitmq
EXPOSE 5672
ENTRYPOINT ["/usr/local/bin/rabbitmq-entrypoint.sh"]
CMD ["rabbitmq-server"]
