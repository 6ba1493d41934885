# MinIO, the S3-compatible store compose runs for job storage, built from its Go module at the
# version `npm run stack` builds (scripts/minio.ts MINIO_VERSION; test/unit/compose.test.ts keeps
# them equal). MinIO no longer publishes images of new releases, so compose builds it as the stack does.
ARG MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

FROM golang:1.26-bookworm AS build
ARG MINIO_VERSION
RUN CGO_ENABLED=0 GOBIN=/out go install github.com/minio/minio@${MINIO_VERSION}

FROM alpine:3.22
COPY --from=build /out/minio /usr/local/bin/minio
RUN adduser -D -H minio && mkdir /data && chown minio /data
USER minio
EXPOSE 9000
ENTRYPOINT ["minio"]
CMD ["server", "/data", "--address", ":9000", "--console-address", ":9001"]
