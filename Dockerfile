# syntax=docker/dockerfile:1
# audit-webhook: build wheels in one stage, run them as a non-root user in a slim one.
# Works with a read-only root filesystem: the only writable path is the certificate folder
# (mount a TLS Secret or an emptyDir at /certs). docs/image.md: building, pushing, updating pins.
# tests/e2e/test_image.py runs this file's install steps, entrypoint and user without a container engine.

# The base, pinned by digest: a tag can be moved, a digest cannot.
FROM docker.io/library/python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16 AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY webhook ./webhook
RUN pip wheel --no-cache-dir --constraint constraints.txt --wheel-dir /wheels .

FROM docker.io/library/python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16
# The commit the image was built from; `audit-webhook version` and audit_webhook_build_info show it.
ARG REVISION=unknown
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 AUDIT_WEBHOOK_REVISION=${REVISION}
COPY --from=build /wheels /wheels
# /certs belongs to the image's user, so that the default command also runs without a volume there
# (`docker run`); Deployments mount an emptyDir or the TLS Secret over it.
RUN pip install --no-cache-dir --no-index --find-links /wheels audit-webhook && rm -rf /wheels \
    && mkdir -m 700 /certs && chown 65532:65532 /certs
COPY examples /app/examples
WORKDIR /app
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["audit-webhook"]
CMD ["serve", "--cert-dir", "/certs", "--source", "/app/examples"]
