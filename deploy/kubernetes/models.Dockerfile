# The models image: the example model repository, copied into each gateway pod's /models volume
# by the Deployment's init container (base/deployment.yaml). Built from the repository's models/
# folder as the context, so nothing else is sent to the builder:
#
#   docker build -f deploy/kubernetes/models.Dockerfile -t gateway-models:dev models/
#
# The base is the gateway's own local base image (deploy/docker/), for its `cp`; any image with
# coreutils works (--build-arg BASE=debian:bookworm-slim). Only credit-scoring goes in: the
# example config serves it alone (models/dense is the benchmarks' 9 MB model).
ARG BASE=gateway-base:bookworm
FROM ${BASE}
COPY credit-scoring /opt/models/credit-scoring
