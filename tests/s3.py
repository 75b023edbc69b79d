"""An S3-compatible server on 127.0.0.1 for the tests: moto in server mode, in its own process.

    server = start_s3_server(port, log_path)
    server.create_bucket("runs")
    uri = server.uri("runs", "r")   # s3://runs/r?endpoint_override=127.0.0.1:PORT&scheme=http
    pyarrow.fs.FileSystem.from_uri(uri)   # with server.env in the environment
    server.keys("runs", "r/"); server.read("runs", "r/x"); server.stop()

The URI carries the endpoint in pyarrow's query form, so the same string works in any process
that has ``server.env`` (dummy credentials, an explicit region, no EC2 metadata look-up): the
buckets must exist first (pyarrow creates none unless the URI says ``allow_bucket_creation``),
and no ``region`` key is needed. Only loopback traffic; the server keeps everything in memory.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Dummy credentials: moto accepts any. AWS_EC2_METADATA_DISABLED stops the AWS SDKs from asking
# 169.254.169.254 for credentials or a region.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class S3Server:
    """A running moto server: ``endpoint`` is host:port, ``env`` the variables a client needs."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def env(self) -> dict[str, str]:
        return dict(S3_ENV)

    def uri(self, bucket: str, prefix: str = "") -> str:
        """``s3://bucket/prefix`` with the endpoint in pyarrow's query form."""
        path = f"{bucket}/{prefix}".rstrip("/")
        return f"s3://{path}?endpoint_override={self.endpoint}&scheme=http"

    def client(self):
        """A boto3 S3 client for this server (its own credentials; the environment is unused)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=S3_ENV["AWS_REGION"],
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self, name: str) -> None:
        """Creates the bucket; one that exists already is left as it is."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix``, sorted."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def write(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_s3_server(port: int, log_path: Path, timeout: float = 60.0) -> S3Server:
    """Starts ``python -m moto.server`` on 127.0.0.1:``port`` and waits until it answers."""
    log = open(log_path, "w")  # noqa: SIM115 - the server's output, for as long as it runs
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log.close()  # the child holds its own copy
    server = S3Server(process, port, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited: {log_path.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            server.client().list_buckets()
            return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.2)
