# syntax=docker/dockerfile:1
# audit-webhook: build a wheel in one stage, run it as a non-root user in a slim one.
# Works with a read-only root filesystem: the only writable path is the certificate folder
# (mount a TLS Secret or an emptyDir at /certs).

FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin webhook
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY examples /app/examples
WORKDIR /app
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["audit-webhook"]
CMD ["serve", "--cert-dir", "/certs", "--source", "/app/examples"]
