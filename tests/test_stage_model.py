"""The model staging script against real S3 (moto's server) and stand-ins for the hub and its CDN, on loopback.

The hub stand-in serves a revision's listing and its files, and sends each LFS file on to the CDN stand-in,
a second server on another port, with a signed URL, as huggingface.co does; both count what they were asked
and the CDN keeps the headers it got. Every refusal is tested beside a near-identical input that passes.
The three servers start once for the module, and each test gets fresh stand-ins' state and a bucket of its own.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional

import boto3
import moto.s3.models
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from tests.conftest import document_plan, minimal_document
from vllm_platform.k8s import staging as staging_job
from vllm_platform.staging import hub as staging_hub
from vllm_platform.staging import retry, stage_model

REVISION = "0123456789abcdef0123456789abcdef01234567"
MODEL = "test-org/tiny-llama"
GATED = "gated-org/gated-llama"
TOKEN = "hf_the_right_token"
KiB = 1024
# Parts of 256 KiB, not the script's 64 MiB nor S3's 5 MiB least: moto's least is lowered to the same (s3_endpoint),
# so that S3's rule on part sizes still holds, on files a twentieth of the size the 5 MiB would need.
PART = 256 * KiB
CUT = PART + PART // 2  # where the CDN cuts an interrupted download: one whole part is uploaded
LFS_SUFFIXES = (".safetensors", ".bin", ".pth")  # what the stand-in keeps in LFS, as the hub's .gitattributes do
DECOYS = ("pytorch_model.bin", "original/consolidated.00.pth", "original/params.json", "README.md", ".gitattributes")
S3_WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload", "DeleteObject"}
TIMEOUTS = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 2})


def safetensors(tensors: dict[str, tuple[list[int], bytes]]) -> bytes:
    """A real safetensors file: the header's length (8 bytes, little-endian), the JSON header, the raw bytes."""
    header: dict[str, Any] = {}
    offset = 0
    for name, (shape, raw) in tensors.items():
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(raw for _, raw in tensors.values())


def safetensors_header(data: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + length])
    return header


def tensor(*shape: int) -> tuple[list[int], bytes]:
    count = 1
    for n in shape:
        count *= n
    return list(shape), os.urandom(2 * count)


def small_model() -> dict[str, bytes]:
    """A tiny Llama-shaped repo: what vLLM needs, and the decoys it must not get."""
    return {
        "model.safetensors": safetensors({"model.embed_tokens.weight": tensor(32, 8), "lm_head.weight": tensor(32, 8)}),
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "vocab_size": 32}).encode(),
        "generation_config.json": b'{"do_sample": true}',
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}).encode(),
        "tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
        "special_tokens_map.json": b'{"bos_token": "<s>"}',
        "pytorch_model.bin": b"decoy: pickled torch weights",
        "original/consolidated.00.pth": b"decoy: Meta's own checkpoint",
        "original/params.json": b'{"dim": 8}',
        "README.md": b"# tiny",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text",
    }


@lru_cache(maxsize=None)
def big_shard() -> bytes:
    """Just over two parts: the smallest file whose interruption leaves a whole part behind."""
    return safetensors({"model.layers.0.mlp.weight": tensor(288, 1024)})  # 576 KiB of F16


def sharded_model() -> dict[str, bytes]:
    second = safetensors({"lm_head.weight": tensor(32, 8)})
    index = {"metadata": {"total_size": 576 * KiB + 512}, "weight_map": {"model.layers.0.mlp.weight": "model-00001-of-00002.safetensors"}}
    return {
        "model-00001-of-00002.safetensors": big_shard(),
        "model-00002-of-00002.safetensors": second,
        "model.safetensors.index.json": json.dumps(index).encode(),
        "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    }


def mistral_model(hf_layout: bool) -> dict[str, bytes]:
    """A Mistral-style repo: its own consolidated weights and params.json, and (`hf_layout`) Hugging Face shards too."""
    files = {"consolidated.safetensors": safetensors({"tok_embeddings.weight": tensor(32, 8)}), "params.json": b'{"dim": 8}'}
    if hf_layout:
        index = {"metadata": {"total_size": 1024}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}
        files |= {
            "model-00001-of-00002.safetensors": safetensors({"model.embed_tokens.weight": tensor(32, 8)}),
            "model-00002-of-00002.safetensors": safetensors({"lm_head.weight": tensor(32, 8)}),
            "model.safetensors.index.json": json.dumps(index).encode(),
            "config.json": b'{"architectures": ["MistralForCausalLM"]}',
        }
    return files


def wanted_files(files: dict[str, bytes]) -> dict[str, bytes]:
    return {p: d for p, d in files.items() if p not in DECOYS}


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # no stand-in waits on a client for longer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_bytes(self, data: bytes, cut_after: Optional[int] = None) -> int:
        """`data` from the byte the Range asks for; `cut_after`: close the connection after that many bytes."""
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(match.group(1)) if match else 0
        body = data[start:]
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        sent = body if cut_after is None else body[:cut_after]
        self.wfile.write(sent)
        if cut_after is not None:
            self.close_connection = True
        return len(sent)


class Cdn(http.server.ThreadingHTTPServer):
    """Where the hub sends LFS files: a signed URL on another origin; it keeps the headers of every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CdnHandler)
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """As new, for the next test: the server runs on."""
        self.blobs: dict[str, bytes] = {}
        self.seen: list[dict[str, str]] = []
        self.sent: list[tuple[str, str, int]] = []  # (sha256, Range asked, bytes sent) per download
        self.cut_after: Optional[int] = None  # the next download stops after this many bytes

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _CdnHandler(_Quiet):
    server: Cdn

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        sha = url.path.removeprefix("/blobs/")
        with self.server.lock:
            self.server.seen.append(dict(self.headers))
            cut, self.server.cut_after = self.server.cut_after, None
        if sha not in self.server.blobs or "X-Amz-Signature=" not in url.query:
            self.reply(403, b"<Error>AccessDenied</Error>")
            return
        sent = self.send_bytes(self.server.blobs[sha], cut)
        with self.server.lock:
            self.server.sent.append((sha, self.headers.get("Range", ""), sent))


@dataclass
class Repo:
    files: dict[str, bytes]
    token: Optional[str] = None  # set: the repo is gated, and this is the one token with access
    answered_sha: str = REVISION  # what the listing says the revision resolved to


class Hub(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cdn: Cdn) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.cdn = cdn
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """As new, for the next test: the server runs on."""
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, Optional[str]]] = []  # (path, Authorization) of every request
        self.failures: dict[str, list[int]] = {}  # "listing" or a file's path: bare statuses to answer it with first
        self.down = False  # set: every request is answered 503, as by a hub in an outage

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, name: str, repo: Repo) -> None:
        self.repos[name] = repo
        for path, data in repo.files.items():
            if path.endswith(LFS_SUFFIXES):
                self.cdn.blobs[hashlib.sha256(data).hexdigest()] = data

    def fail(self, what: str, *statuses: int) -> None:
        self.failures[what] = list(statuses)

    def resolve_gets(self) -> int:
        return sum("/resolve/" in path for path, _ in self.requests)


class _HubHandler(_Quiet):
    server: Hub

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        what = "listing" if path.startswith("/api/") else urllib.parse.unquote(path.split(f"/{REVISION}/", 1)[-1])
        with self.server.lock:
            self.server.requests.append((path, self.headers.get("Authorization")))
            scripted = self.server.failures.get(what)
            failure = 503 if self.server.down else scripted.pop(0) if scripted else None
        if failure:
            self.reply(failure, b'{"error": "scripted"}')
        elif listing := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path):
            self.listing(listing.group(1), urllib.parse.unquote(listing.group(2)))
        elif resolve := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            self.resolve(resolve.group(1), urllib.parse.unquote(resolve.group(2)), urllib.parse.unquote(resolve.group(3)))
        else:
            self.reply(404, b'{"error": "no such route"}')

    def repo(self, name: str, revision: str) -> Optional[Repo]:
        """The repo, or None once the refusal the hub would give has been sent."""
        repo = self.server.repos.get(name)
        auth = self.headers.get("Authorization")
        if repo is None:
            self.reply(401 if auth is None else 404, b'{"error": "Repository not found"}', X_Error_Code="RepoNotFound")
        elif repo.token and auth is None:
            self.reply(401, b'{"error": "Access to this model is restricted"}', X_Error_Code="GatedRepo")
        elif repo.token and auth != f"Bearer {repo.token}":
            self.reply(403, b'{"error": "Access to this model is restricted"}', X_Error_Code="GatedRepo")
        elif revision != REVISION:
            self.reply(404, b'{"error": "Revision not found"}', X_Error_Code="RevisionNotFound")
        else:
            return repo
        return None

    def listing(self, name: str, revision: str) -> None:
        repo = self.repo(name, revision)
        if repo is None:
            return
        siblings = []
        for path, data in repo.files.items():
            sibling: dict[str, Any] = {"rfilename": path, "size": len(data)}
            if path.endswith(LFS_SUFFIXES):
                sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        self.reply(200, json.dumps({"id": name, "sha": repo.answered_sha, "siblings": siblings}).encode())

    def resolve(self, name: str, revision: str, path: str) -> None:
        repo = self.repo(name, revision)
        if repo is None:
            return
        if path not in repo.files:
            self.reply(404, b'{"error": "Entry not found"}', X_Error_Code="EntryNotFound")
        elif path.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(repo.files[path]).hexdigest()
            self.reply(302, Location=f"{self.server.cdn.url}/blobs/{sha}?X-Amz-Signature=signed")
        else:
            self.send_bytes(repo.files[path])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    least = pytest.MonkeyPatch()
    # The server runs in this process: its S3 refuses a part below PART but the last, as S3 does below 5 MiB.
    least.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", PART)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    starting = threading.Thread(target=server.start, daemon=True)
    starting.start()
    starting.join(timeout=10)  # start() waits for the server without a bound; this bounds it
    assert not starting.is_alive(), f"moto's server did not start on 127.0.0.1:{port}"
    yield f"http://127.0.0.1:{port}"
    server.stop()
    least.undo()


@pytest.fixture(scope="module")
def stand_ins() -> Iterator[tuple[Hub, Cdn]]:
    """The hub and its CDN, started once: each test resets them (the `staging` fixture)."""
    cdn = Cdn()
    hub = Hub(cdn)
    for server in (cdn, hub):
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield hub, cdn
    for server in (hub, cdn):
        server.shutdown()
        server.server_close()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing", config=TIMEOUTS
    )


@dataclass
class Ran:
    code: int
    out: str
    err: str


@dataclass
class Staging:
    """One test's hub, CDN and bucket, and the ways to run the script against them."""

    hub: Hub
    cdn: Cdn
    s3: Any
    endpoint: str
    bucket: str
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    termination_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.termination_log = self.tmp / "termination-log"
        self.termination_log.write_text("")  # Kubernetes makes the file; the script only writes one that is there
        self.monkeypatch.setattr(stage_model, "TERMINATION_LOG", str(self.termination_log))

    def env(self, repo: str = MODEL, token: Optional[str] = None, keys: bool = True, **overrides: str) -> dict[str, str]:
        """The environment the Job gives the script, pointed at the stand-ins; `keys`: with credentials for moto."""
        token_file = self.tmp / "token"
        if token is None:
            token_file.unlink(missing_ok=True)  # as when the Secret has no token: the mounted file is absent
        else:
            token_file.write_text(token + "\n")
        return {
            "HF_REPO": repo,
            "HF_REVISION": REVISION,
            "HF_ENDPOINT": self.hub.url,
            "HF_TOKEN_PATH": str(token_file),
            "CACHE_BUCKET": self.bucket,
            "CACHE_PREFIX": prefix(repo),
            "AWS_ENDPOINT_URL": self.endpoint,
            **({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"} if keys else {}),
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.tmp / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1",
            **overrides,
        }

    def use(self, env: dict[str, str]) -> None:
        """`env` as this process's, and no credentials but what it gives."""
        for name in (*CREDENTIAL_VARIABLES, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            self.monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)

    def main(self, repo: str = MODEL, token: Optional[str] = None, keys: bool = True, **overrides: str) -> Ran:
        """The script's main(), in this process, with the environment the Job gives it."""
        self.use(self.env(repo, token, keys, **overrides))
        code = stage_model.main()
        out, err = self.capsys.readouterr()
        return Ran(code, out, err)

    def stage(self, repo: str = MODEL) -> tuple[stage_model.Result, list[tuple[str, str]], list[str]]:
        """stage() on a client that records every S3 write, in order: (operation, key)."""
        writes: list[tuple[str, str]] = []
        client = s3_client(self.endpoint)

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            if model.name in S3_WRITES:
                writes.append((model.name, params.get("Key", "")))

        client.meta.events.register("before-parameter-build.s3", record)
        lines: list[str] = []
        result = stage_model.stage(stage_model.Settings.from_env(self.env(repo)), client, lines.append)
        return result, writes, lines

    def objects(self) -> dict[str, bytes]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return {o["Key"]: self.s3.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read() for o in listed}

    def uploads(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return found


def prefix(repo: str) -> str:
    return f"models/{repo}/{REVISION}/"


def marker(repo: str) -> str:
    return f"models/{repo}/{REVISION}.staged.json"


# What else the SDK's chain would take credentials from: none of them may leak in from the machine running the tests.
CREDENTIAL_VARIABLES = (
    "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
)  # fmt: skip


@pytest.fixture
def staging(
    s3_endpoint: str, stand_ins: tuple[Hub, Cdn], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Staging:
    monkeypatch.setattr(retry, "BACKOFF_BASE_SECONDS", 0.0)  # the only sleeps are the script's backoff
    monkeypatch.setattr(staging_hub, "HTTP_TIMEOUT_SECONDS", 5.0)
    hub, cdn = stand_ins
    hub.reset()
    cdn.reset()
    s3 = s3_client(s3_endpoint)
    bucket = f"model-cache-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    return Staging(hub, cdn, s3, s3_endpoint, bucket, tmp_path, monkeypatch, capsys)


def test_a_full_copy_lands_in_the_layout_and_the_marker_comes_last(staging: Staging) -> None:
    files = small_model()
    staging.hub.add(MODEL, Repo(files))
    result, writes, lines = staging.stage()
    objects = staging.objects()
    wanted = wanted_files(files)
    assert objects.keys() == {prefix(MODEL) + p for p in wanted} | {marker(MODEL)}
    assert all(objects[prefix(MODEL) + p] == data for p, data in wanted.items())
    assert not any(key.endswith(DECOYS) for key in objects), "a decoy was copied"
    assert writes[-1] == ("PutObject", marker(MODEL)), "the marker is not the last write"
    assert json.loads(objects[marker(MODEL)]) == {
        "repo": MODEL,
        "revision": REVISION,
        "files": [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest() if p.endswith(".safetensors") else None}
            for p, d in sorted(wanted.items())
        ],
    }
    assert set(safetensors_header(objects[prefix(MODEL) + "model.safetensors"])) == {"model.embed_tokens.weight", "lm_head.weight", "__metadata__"}
    head = staging.s3.head_object(Bucket=staging.bucket, Key=prefix(MODEL) + "model.safetensors")
    assert head["Metadata"] == {"sha256": hashlib.sha256(files["model.safetensors"]).hexdigest()}
    assert [o.action for o in result.outcomes] == ["copied"] * len(wanted) and not result.already_staged
    assert f"copied model.safetensors {len(files['model.safetensors'])} bytes" in lines
    assert lines[-1].startswith(f"staged {MODEL}@{REVISION} in s3://{staging.bucket}/{prefix(MODEL)}: {len(wanted)} files, {len(wanted)} copied")


def test_a_second_run_copies_nothing_and_needs_no_hub(staging: Staging) -> None:
    staging.hub.add(MODEL, Repo(small_model()))
    assert staging.main().code == 0
    staging.hub.down = True
    asked = len(staging.hub.requests)
    ran = staging.main()
    already = f"already staged: s3://{staging.bucket}/{marker(MODEL)} lists 6 files, each in S3 whole; the hub was not asked"
    assert ran.code == 0 and ran.out.splitlines() == [already] and ran.err == ""
    result, writes, lines = staging.stage()
    assert result.already_staged and result.outcomes == [] and lines == [already]
    assert writes == [], "an already staged revision was copied again"
    assert len(staging.hub.requests) == asked, "an already staged revision asked the hub"


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("delete", "config.json is not in S3 at"),
        ("resize", "config.json is not in S3 at"),
        ("same size, no sha256", "model.safetensors is not in S3 at"),
    ],
)
def test_a_marker_is_trusted_only_while_its_files_are_whole(staging: Staging, damage: str, reason: str) -> None:
    files = small_model()
    staging.hub.add(MODEL, Repo(files))
    assert staging.main().code == 0
    bucket, path = staging.bucket, "model.safetensors" if damage.startswith("same size") else "config.json"
    if damage == "delete":
        staging.s3.delete_object(Bucket=bucket, Key=prefix(MODEL) + path)
    else:  # overwritten: another size, or the same size without the sha256 the script puts on every LFS file
        staging.s3.put_object(Bucket=bucket, Key=prefix(MODEL) + path, Body=b"{}" if damage == "resize" else bytes(len(files[path])))
    gets = staging.hub.resolve_gets()
    result, writes, lines = staging.stage()
    assert not result.already_staged and any(f"is not trusted ({reason}" in line for line in lines), "a marker over a damaged copy was trusted"
    # The marker goes before anything is copied, so that a run stopped midway leaves none.
    assert writes == [("DeleteObject", marker(MODEL)), ("PutObject", prefix(MODEL) + path), ("PutObject", marker(MODEL))]
    assert staging.hub.resolve_gets() == gets + 1, "only the damaged file comes from the hub again"
    objects = staging.objects()
    assert objects[prefix(MODEL) + path] == files[path] and marker(MODEL) in objects


def test_files_already_complete_are_skipped_and_a_wrong_one_is_copied_again(staging: Staging) -> None:
    files = small_model()
    staging.hub.add(MODEL, Repo(files))
    assert staging.main().code == 0
    staging.s3.delete_object(Bucket=staging.bucket, Key=marker(MODEL))
    staging.s3.put_object(Bucket=staging.bucket, Key=prefix(MODEL) + "config.json", Body=b"{}")  # another size
    gets = staging.hub.resolve_gets()
    result, writes, _ = staging.stage()
    assert {o.path: o.action for o in result.outcomes if o.action != "skipped"} == {"config.json": "copied"}
    assert staging.hub.resolve_gets() == gets + 1
    assert writes == [("PutObject", prefix(MODEL) + "config.json"), ("PutObject", marker(MODEL))]
    assert staging.objects()[prefix(MODEL) + "config.json"] == files["config.json"]


def test_a_stale_marker_is_deleted_before_anything_is_copied(staging: Staging) -> None:
    staging.hub.add(MODEL, Repo(small_model()))
    staging.s3.put_object(Bucket=staging.bucket, Key=marker(MODEL), Body=b'{"repo": "test-org/tiny-llama", "files": []}')
    staging.hub.fail("config.json", 404)  # the first file to copy: the run stops there
    ran = staging.main()
    assert ran.code == 2 and "is not trusted (it is not what this script writes for the files it lists): deleted" in ran.out
    assert marker(MODEL) not in staging.objects(), "a marker stayed through a partial copy"
    assert staging.main().code == 0
    assert json.loads(staging.objects()[marker(MODEL)])["repo"] == MODEL


@pytest.mark.parametrize(
    "hf_layout, copied",
    [
        (True, {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "config.json"}),
        (False, {"consolidated.safetensors"}),
    ],
)
def test_consolidated_weights_are_copied_only_when_they_are_all_there_is(staging: Staging, hf_layout: bool, copied: set[str]) -> None:
    files = mistral_model(hf_layout)
    staging.hub.add(MODEL, Repo(files))
    assert staging.main().code == 0
    objects = staging.objects()
    assert objects.keys() == {prefix(MODEL) + p for p in copied | {"params.json"}} | {marker(MODEL)}
    assert all(objects[prefix(MODEL) + p] == files[p] for p in copied)
    assert {f["path"] for f in json.loads(objects[marker(MODEL)])["files"]} == copied | {"params.json"}


def test_a_prefix_staged_with_duplicates_loses_them_without_a_copy(staging: Staging) -> None:
    files = mistral_model(hf_layout=True)
    staging.hub.add(MODEL, Repo(files))
    assert staging.main().code == 0
    # What an earlier script left: consolidated.safetensors beside the shards, and listed in its marker.
    duplicate, data = "consolidated.safetensors", files["consolidated.safetensors"]
    staging.s3.put_object(Bucket=staging.bucket, Key=prefix(MODEL) + duplicate, Body=data, Metadata={"sha256": hashlib.sha256(data).hexdigest()})
    earlier = json.loads(staging.objects()[marker(MODEL)])
    earlier["files"] = sorted([*earlier["files"], {"path": duplicate, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}], key=lambda f: f["path"])
    staging.s3.put_object(Bucket=staging.bucket, Key=marker(MODEL), Body=json.dumps(earlier).encode())
    gets = staging.hub.resolve_gets()
    ran = staging.main()
    assert ran.code == 0 and "is not trusted (it is not what this script writes" in ran.out
    assert f"deleted s3://{staging.bucket}/{prefix(MODEL)}{duplicate}: not a file of this copy" in ran.out
    assert prefix(MODEL) + duplicate not in staging.objects() and staging.hub.resolve_gets() == gets
    assert duplicate not in {f["path"] for f in json.loads(staging.objects()[marker(MODEL)])["files"]}


def interrupted(staging: Staging) -> Ran:
    """A first run whose CDN closes the shard's download after one and a half parts: one part is uploaded."""
    staging.monkeypatch.setattr(stage_model, "PART_SIZE", PART)
    staging.hub.add(MODEL, Repo(sharded_model()))
    staging.cdn.cut_after = CUT
    with pytest.MonkeyPatch.context() as once:
        once.setattr(retry, "MAX_ATTEMPTS", 1)  # no retry: the run stops as a killed pod would
        ran = staging.main()
    return ran


def test_an_interrupted_copy_leaves_no_marker_and_the_next_run_resumes_it(staging: Staging) -> None:
    shard, key = big_shard(), prefix(MODEL) + "model-00001-of-00002.safetensors"
    ran = interrupted(staging)
    reason = f"model-00001-of-00002.safetensors: the connection closed at byte {CUT} of {len(shard)}"
    assert ran.code == 1 and ran.err.splitlines()[-1].startswith(reason)
    assert staging.termination_log.read_text() == ran.err.splitlines()[-1] + "\n"
    objects = staging.objects()
    assert marker(MODEL) not in objects and key not in objects
    (upload,) = staging.uploads()
    parts = staging.s3.list_parts(Bucket=staging.bucket, Key=key, UploadId=upload["UploadId"])["Parts"]
    assert [p["Size"] for p in parts] == [PART]

    sent = len(staging.cdn.sent)
    ran = staging.main()
    assert ran.code == 0, ran.err
    assert f"resumed model-00001-of-00002.safetensors {len(shard)} bytes ({PART} kept from an interrupted run)" in ran.out
    resumed = [(r, n) for sha, r, n in staging.cdn.sent[sent:] if sha == hashlib.sha256(shard).hexdigest()]
    assert resumed == [(f"bytes={PART}-", len(shard) - PART)], "the resumed run fetched more than the missing bytes"
    objects = staging.objects()
    assert objects[key] == shard and marker(MODEL) in objects and staging.uploads() == []


def test_a_resumed_file_is_hashed_whole_and_copied_again_when_wrong(staging: Staging) -> None:
    shard, key = big_shard(), prefix(MODEL) + "model-00001-of-00002.safetensors"
    assert interrupted(staging).code == 1
    (upload,) = staging.uploads()
    # The kept part replaced by bytes of the same size: only the read-back's hash can tell.
    staging.s3.upload_part(Bucket=staging.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=bytes(PART))
    ran = staging.main()
    assert ran.code == 1 and "of the resumed object is not the listing's" in ran.err and "deleted it" in ran.err
    assert key not in staging.objects() and marker(MODEL) not in staging.objects()
    ran = staging.main()
    assert ran.code == 0 and f"copied model-00001-of-00002.safetensors {len(shard)} bytes" in ran.out
    assert staging.objects()[key] == shard


def test_a_gated_model_needs_a_token_with_access(staging: Staging) -> None:
    staging.hub.add(GATED, Repo(small_model(), token=TOKEN))
    refused = staging.main(GATED)
    assert refused.code == 2
    line = refused.err.strip()
    assert line == (
        f"{GATED} is gated and no token was given (HTTP 401): request access on {staging.hub.url}/{GATED} while logged in, "
        "then set the stack's hfToken to a token of that account: pulumi config set --secret vllm-platform:hfToken <token>"
    )
    assert staging.termination_log.read_text() == line + "\n"
    assert staging.main(GATED, token="").code == 2, "an empty token file is no token"
    wrong = staging.main(GATED, token="hf_another_token")
    assert wrong.code == 2 and f"{GATED} is gated and the token given has no access to it (HTTP 403)" in wrong.err
    assert staging.objects() == {}
    ran = staging.main(GATED, token=TOKEN)
    assert ran.code == 0 and marker(GATED) in staging.objects()


def test_the_token_reaches_the_hub_and_never_the_cdn(staging: Staging) -> None:
    staging.hub.add(GATED, Repo(small_model(), token=TOKEN))
    assert staging.main(GATED, token=TOKEN).code == 0
    assert staging.hub.requests and all(auth == f"Bearer {TOKEN}" for _, auth in staging.hub.requests)
    assert staging.cdn.seen, "no file went through the CDN: the test proves nothing"
    assert not any(name.lower() == "authorization" for headers in staging.cdn.seen for name in headers)


@pytest.mark.parametrize(
    "overrides, refusal",
    [
        ({"HF_REVISION": "main"}, "HF_REVISION 'main' is not a commit sha"),
        ({"HF_REVISION": REVISION.upper()}, "is not a commit sha"),
        ({"HF_REVISION": REVISION[:-1]}, "is not a commit sha"),
        ({"HF_REVISION": REVISION}, None),
        ({"CACHE_PREFIX": prefix(MODEL).rstrip("/")}, "must be like models/<org>/<name>/<revision>/, ending with '/'"),
        ({"CACHE_PREFIX": f"models/../{REVISION}/"}, "must be like models/<org>/<name>/<revision>/"),
        ({"CACHE_PREFIX": prefix(MODEL)}, None),
        ({"HF_REPO": "tiny-llama"}, "HF_REPO 'tiny-llama' is not org/name"),
        ({"HF_REPO": "test-org/tiny-llama/extra"}, "is not org/name"),
        ({"HF_REPO": "test-org/tiny-llama"}, None),
        ({"CACHE_BUCKET": "Model_Cache"}, "is not an S3 bucket name"),
        ({"HF_ENDPOINT": "ftp://127.0.0.1"}, "is not an http(s) URL"),
        ({"HF_ENDPOINT": ""}, None),
    ],
)
def test_bad_input_is_refused_next_to_good(staging: Staging, overrides: dict[str, str], refusal: Optional[str]) -> None:
    env = staging.env(**overrides)
    if refusal is None:
        settings = stage_model.Settings.from_env(env)
        assert settings.endpoint == (env["HF_ENDPOINT"] or "https://huggingface.co")
        assert settings.marker_key == marker(MODEL)
    else:
        with pytest.raises(stage_model.Permanent, match=re.escape(refusal)):
            stage_model.Settings.from_env(env)


def test_bad_input_exits_2_before_asking_anyone(staging: Staging) -> None:
    staging.hub.add(MODEL, Repo(small_model()))
    ran = staging.main(HF_REVISION="main")
    assert ran.code == 2 and ran.err.startswith("HF_REVISION 'main' is not a commit sha")
    assert staging.termination_log.read_text() == ran.err
    assert staging.hub.requests == [] and staging.objects() == {}
    assert staging.main().code == 0


def test_a_revision_without_safetensors_is_refused(staging: Staging) -> None:
    files = small_model()
    staging.hub.add("test-org/bin-only", Repo({p: d for p, d in files.items() if p != "model.safetensors"}))
    ran = staging.main("test-org/bin-only")
    assert ran.code == 2 and "has no *.safetensors file: vLLM's runai_streamer load format reads safetensors only" in ran.err
    assert staging.hub.resolve_gets() == 0 and staging.objects() == {}
    staging.hub.add(MODEL, Repo(files))
    assert staging.main().code == 0


def test_a_listing_of_another_commit_is_refused(staging: Staging) -> None:
    staging.hub.add("test-org/moved", Repo(small_model(), answered_sha="f" * 40))
    ran = staging.main("test-org/moved")
    assert ran.code == 2 and f"resolved test-org/moved@{REVISION} to commit '{'f' * 40}'" in ran.err
    staging.hub.add(MODEL, Repo(small_model()))
    assert staging.main().code == 0


def test_a_transient_503_is_retried_and_a_404_is_not(staging: Staging) -> None:
    staging.hub.add(MODEL, Repo(small_model()))
    staging.hub.fail("listing", 503, 503)
    ran = staging.main()
    assert ran.code == 0 and ran.err.count("retrying listing") == 2
    listings = [p for p, _ in staging.hub.requests if p.startswith("/api/")]
    assert len(listings) == 3

    staging.s3.delete_object(Bucket=staging.bucket, Key=marker(MODEL))
    staging.s3.delete_object(Bucket=staging.bucket, Key=prefix(MODEL) + "config.json")
    before = len(staging.hub.requests)
    staging.hub.fail("config.json", 404)
    ran = staging.main()
    assert ran.code == 2 and "config.json not found in" in ran.err and "retrying" not in ran.err
    assert [p for p, _ in staging.hub.requests[before:]].count(f"/{MODEL}/resolve/{REVISION}/config.json") == 1


def test_retries_are_bounded(staging: Staging) -> None:
    staging.monkeypatch.setattr(retry, "MAX_ATTEMPTS", 3)
    staging.hub.add(MODEL, Repo(small_model()))
    staging.hub.fail("listing", *[429] * 10)
    ran = staging.main()
    assert ran.code == 1 and ran.err.splitlines()[-1].endswith("HTTP 429 from the hub (gave up after 3 attempt(s) in 0 s)")
    assert len(staging.hub.requests) == 3


def test_the_job_runs_the_package_its_config_map_carries(staging: Staging) -> None:
    """The Job's own command, working directory and environment, in a directory laid out as its ConfigMap volume
    mounts the package: nothing of the project but what the ConfigMap carries can be imported there."""
    document = minimal_document()
    document["config"]["vllm-platform:models"][0]["revision"] = REVISION
    (model,) = document_plan(document).models
    plan = model.weights.staging
    assert plan is not None
    files = small_model()
    staging.hub.add(plan.repo, Repo(files))
    pod = staging_job.job(model, plan, staging.bucket, None, hf_token=False)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "script"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "script"]
    data = staging_job.script_config_map(model, plan)["data"]
    root = staging.tmp / "pod"
    for item in volume["configMap"]["items"]:
        placed = root / mount["mountPath"].lstrip("/") / item["path"]
        placed.parent.mkdir(parents=True, exist_ok=True)
        placed.write_text(data[item["key"]])
    job_env = {e["name"]: e["value"] for e in container["env"]}
    ran = subprocess.run(
        [sys.executable, *container["command"][1:]],  # the image's python3: this interpreter, without the project
        env=staging.env(plan.repo) | job_env,  # the Job's own values, and the stand-ins' addresses
        cwd=root / container["workingDir"].lstrip("/"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1].startswith(f"staged {plan.repo}@{REVISION}")
    objects = staging.objects()
    assert plan.marker_key in objects and all(objects[plan.prefix + p] == d for p, d in wanted_files(files).items())


def test_credentials_that_appear_after_a_while_are_waited_for(staging: Staging) -> None:
    """As when the pod starts before its Pod Identity association takes effect: the copy goes on once they come."""
    staging.hub.add(MODEL, Repo(small_model()))
    credentials = staging.tmp / "credentials"
    env = staging.env(keys=False, AWS_SHARED_CREDENTIALS_FILE=str(credentials))
    staging.use(env)
    staging.monkeypatch.setattr(retry, "BACKOFF_BASE_SECONDS", 1.0)
    clock = SteppedClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.slept) == 2:  # they appear during the second wait
            credentials.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")

    client = stage_model.s3_client(sleep, clock)
    assert clock.slept == [1.0, 2.0]
    waits = staging.capsys.readouterr().err.splitlines()
    assert len(waits) == 2 and all(w.startswith("retrying looking for AWS credentials in ") for w in waits)
    assert "no AWS credentials: EKS Pod Identity gave this pod none" in waits[0]
    result = stage_model.stage(stage_model.Settings.from_env(env), client, lambda line: None)
    assert not result.already_staged and marker(MODEL) in staging.objects()


def test_credentials_that_never_appear_fail_the_run_bounded_in_count_and_time(staging: Staging) -> None:
    staging.hub.add(MODEL, Repo(small_model()))
    staging.use(staging.env(keys=False))
    frozen = SteppedClock(moves=False)  # a clock that never moves: the count ends it
    with pytest.raises(retry.Transient, match=rf"gave up after {stage_model.CREDENTIALS_ATTEMPTS} attempt\(s\) in 0 s\)$"):
        stage_model.s3_client(frozen.sleep, frozen)
    assert len(frozen.slept) == stage_model.CREDENTIALS_ATTEMPTS - 1
    staging.monkeypatch.setattr(retry, "BACKOFF_BASE_SECONDS", 30.0)
    stepped = SteppedClock()  # waits of 30, 30 and what is left: the grace ends it
    with pytest.raises(retry.Transient, match=r"gave up after 4 attempt\(s\) in 75 s\)$"):
        stage_model.s3_client(stepped.sleep, stepped)
    assert stepped.slept == [30.0, 30.0, stage_model.CREDENTIALS_GRACE_SECONDS - 60]
    staging.monkeypatch.setattr(retry, "BACKOFF_BASE_SECONDS", 0.0)
    staging.capsys.readouterr()
    ran = staging.main(keys=False)  # the whole run, its backoff at 0 s: exit 1, one line, and the hub never asked
    assert ran.code == 1 and staging.hub.requests == []
    (line,) = ran.err.splitlines()[-1:]
    assert line.startswith("no AWS credentials: EKS Pod Identity gave this pod none") and "list-pod-identity-associations" in line
    assert staging.termination_log.read_text() == line + "\n"
    assert staging.main().code == 0, "the same run with credentials stages"


@dataclass
class SteppedClock:
    """time.monotonic and time.sleep for the credentials' wait: each sleep moves the clock (unless frozen), at once."""

    moves: bool = True
    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds if self.moves else 0.0


@pytest.mark.parametrize(
    "code, status, kind",
    [
        ("RequestTimeout", 400, stage_model.Transient),
        ("ExpiredToken", 400, stage_model.Transient),
        ("SlowDown", 503, stage_model.Transient),
        ("InvalidArgument", 400, stage_model.Permanent),
        ("AccessDenied", 403, stage_model.Permanent),
        ("InternalError", 500, stage_model.Transient),
    ],
)
def test_s3_errors_are_retried_or_not_by_their_code(code: str, status: int, kind: type) -> None:
    error = ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "UploadPart")
    assert isinstance(stage_model.s3_failure("upload part 1", error), kind)
