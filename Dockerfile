# The aigw-xds image the Kubernetes manifests run (deploy/kubernetes): the control plane
# (`aigw-xds serve --kubernetes`) and the translator sidecar (`aigw-xds translator --xds ...`).
#   docker build -t aigw-xds:0.1.0 .
# Not built in CI (no container runtime there); tests/examples/test_kubernetes_manifests.py checks
# that it copies every package pyproject.toml installs.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src/ src/
COPY translator/ translator/
COPY contract/ contract/
COPY fakes/ fakes/
COPY proto_gen/gen/ proto_gen/gen/
RUN pip install . \
    && rm -rf /build \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin aigw

WORKDIR /
USER 10001:10001
EXPOSE 18000 8081
CMD ["aigw-xds", "--help"]
