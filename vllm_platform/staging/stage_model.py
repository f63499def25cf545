"""Copy one Hugging Face model revision into the S3 model cache, resumably: the staging Job runs this.

It is mounted from a ConfigMap and run alone, as `python3 /opt/stage/stage_model.py`, in public.ecr.aws/lambda/python:3.12:
the standard library and boto3 only, nothing from vllm_platform.

Environment:
  HF_REPO        org/name on the hub, e.g. meta-llama/Llama-3.1-8B-Instruct.
  HF_REVISION    the commit to copy, 40 lowercase hex digits: a branch or tag would move under the cache.
  HF_ENDPOINT    the hub, default https://huggingface.co.
  HF_TOKEN_PATH  optional file holding the token (a mounted Secret); absent or empty: no token.
  CACHE_BUCKET   the destination bucket.
  CACHE_PREFIX   the destination, models/<org>/<name>/<revision>/ (it must end with "/").
  AWS_*          boto3's default chain: EKS Pod Identity in production, AWS_ENDPOINT_URL and keys in tests.

Each file vLLM needs (one copy of the weights) goes to s3://CACHE_BUCKET/CACHE_PREFIX<path in the repo>. The completion
marker, <CACHE_PREFIX without its "/">.staged.json, is written last, once every file is complete; it lies beside the
prefix, not in it, so serving pods that copy the prefix never see it. A run that finds it, and every file it lists in S3
at its size, is done without asking the hub: a revision is a fixed commit.

Exit codes: 0 staged (or already staged), 1 a transient failure outlasted the bounded retries (run again: it resumes),
2 bad input or a permanent refusal (running again cannot help). A failure's one-line reason goes to stderr and to the
pod's termination message.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Optional, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

EXIT_OK, EXIT_TRANSIENT, EXIT_PERMANENT = 0, 1, 2
TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' terminationMessagePath; tests point it elsewhere
DEFAULT_ENDPOINT = "https://huggingface.co"
PART_SIZE = 64 * 1024 * 1024  # one part is all a copy holds in memory; S3 wants >= 5 MiB but for the last
MAX_PARTS = 10_000  # S3's limit per upload: 625 GiB per file at 64 MiB parts
CHUNK_SIZE = 1024 * 1024  # one socket read
HTTP_TIMEOUT_SECONDS = 60.0  # to connect, and for each read: a stalled CDN is a transient failure
# Retries of one operation are bounded in count and in time; a copy that gets a part further starts afresh.
MAX_ATTEMPTS = 6
RETRY_DEADLINE_SECONDS = 300.0
BACKOFF_BASE_SECONDS = 1.0  # doubled at each failure (1, 2, 4, 8, 16 s), never past the maximum
BACKOFF_MAX_SECONDS = 30.0
MAX_REDIRECTS = 5
# Named, so that the upload, each of its parts and its completion agree on one checksum whichever boto3 the
# image ships (boto3 1.36 began to add CRC32 by default, earlier ones none), a resumed run's included.
PART_CHECKSUM = "CRC32"
S3_CONFIG = Config(connect_timeout=HTTP_TIMEOUT_SECONDS, read_timeout=HTTP_TIMEOUT_SECONDS, retries={"mode": "standard", "max_attempts": 5})

REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
REVISION = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# What vLLM reads to serve: safetensors weights, configs and tokenizers. Other weight formats are
# duplicates at best, and Llama repos keep a second copy of their weights as .pth under original/.
WANTED = re.compile(r".*\.(?:safetensors|json|tiktoken|jinja|txt)|(?:.*/)?(?:tokenizer\.model|vocab\.[^/]+)")
UNWANTED = re.compile(r".*\.(?:bin|pth|pt|gguf|h5|msgpack|onnx)")
# Mistral repos keep their weights twice: Hugging Face shards and Mistral's own consolidated*.safetensors. vLLM's
# runai_streamer loader reads every safetensors file under the prefix, with no index to drop duplicates, and may
# take the Mistral format when consolidated files are there: so they are copied only when they are all there is.
HF_WEIGHTS = re.compile(r"model[^/]*\.safetensors(?:\.index\.json)?")
CONSOLIDATED = re.compile(r"consolidated[^/]*\.safetensors(?:\.index\.json)?")
T = TypeVar("T")


class Permanent(Exception):
    """Running again cannot help: bad input, no access, a revision vLLM cannot load (exit 2)."""


class Transient(Exception):
    """Worth another try: 429, 5xx, resets, timeouts (exit 1 once the retries are spent)."""

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Settings:
    repo: str
    revision: str
    bucket: str
    prefix: str
    endpoint: str = DEFAULT_ENDPOINT
    token: Optional[str] = None

    @property
    def marker_key(self) -> str:
        return self.prefix[:-1] + ".staged.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The settings, validated: every refusal names the variable and what it must be."""
        repo, revision = env.get("HF_REPO", ""), env.get("HF_REVISION", "")
        bucket, prefix = env.get("CACHE_BUCKET", ""), env.get("CACHE_PREFIX", "")
        endpoint = env.get("HF_ENDPOINT", "") or DEFAULT_ENDPOINT
        if not REPO.fullmatch(repo):
            raise Permanent(f"HF_REPO {repo!r} is not org/name (e.g. meta-llama/Llama-3.1-8B-Instruct)")
        if not REVISION.fullmatch(revision):
            raise Permanent(f"HF_REVISION {revision!r} is not a commit sha (40 lowercase hex digits); branches and tags move")
        if not BUCKET.fullmatch(bucket):
            raise Permanent(f"CACHE_BUCKET {bucket!r} is not an S3 bucket name")
        if not prefix.endswith("/") or any(p in ("", ".", "..") for p in prefix.split("/")[:-1]):
            raise Permanent(f"CACHE_PREFIX {prefix!r} must be like models/<org>/<name>/<revision>/, ending with '/'")
        address = urllib.parse.urlsplit(endpoint)
        if address.scheme not in ("http", "https") or not address.netloc or address.query or address.fragment:
            raise Permanent(f"HF_ENDPOINT {endpoint!r} is not an http(s) URL")
        return cls(repo, revision, bucket, prefix, endpoint.rstrip("/"), read_token(env.get("HF_TOKEN_PATH", "")))


def read_token(path: str) -> Optional[str]:
    """The token in the mounted Secret's file; no file or an empty one means none (public models)."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as error:
        raise Permanent(f"HF_TOKEN_PATH {path} cannot be read: {error}") from error
    if token and not re.fullmatch(r"[\x21-\x7e]+", token):
        raise Permanent(f"the token in {path} has spaces or control characters inside it")
    return token or None


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: Optional[str]  # LFS files only: the listing gives no sha256 of the others

    @property
    def metadata(self) -> dict[str, str]:
        return {"sha256": self.sha256} if self.sha256 else {}  # what a later run checks the object against


@dataclass(frozen=True)
class Outcome:
    path: str
    action: str  # copied, resumed or skipped
    size: int
    transferred: int  # bytes that came from the hub in this run

    def line(self) -> str:
        kept = f" ({self.size - self.transferred} kept from an interrupted run)" if self.action == "resumed" else ""
        return f"{self.action} {self.path} {self.size} bytes{kept}"


@dataclass(frozen=True)
class Result:
    outcomes: list[Outcome]
    already_staged: bool


def wanted(path: str) -> bool:
    return path.split("/", 1)[0] != "original" and not UNWANTED.fullmatch(path) and bool(WANTED.fullmatch(path))


def select(entries: list[Entry]) -> list[Entry]:
    """The files of a listing to copy, by path: one copy of the weights, in the Hugging Face layout where it has one."""
    files = sorted((e for e in entries if wanted(e.path)), key=lambda e: e.path)
    if any(HF_WEIGHTS.fullmatch(e.path) for e in files):
        return [e for e in files if not CONSOLIDATED.fullmatch(e.path)]
    return files


def origin(url: str) -> tuple[str, str]:
    address = urllib.parse.urlsplit(url)
    return address.scheme, address.netloc.lower()


class _AuthOnlyToSameOrigin(urllib.request.HTTPRedirectHandler):
    """Follows redirects, keeping Authorization only where the origin stays the same: LFS downloads go on
    to a CDN on another host with a signed URL, and the token must never reach it. The header is set as
    'unredirected', which urllib drops on every redirect; this puts it back on a same-origin one."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        token = req.unredirected_hdrs.get("Authorization")
        if new is not None and token and origin(new.full_url) == origin(req.full_url):
            new.add_unredirected_header("Authorization", token)
        return new


def describe(error: BaseException) -> str:
    reason = getattr(error, "reason", None)  # URLError wraps the socket's error
    cause = reason if isinstance(reason, BaseException) else error
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


class Hub:
    """The hub's HTTP API: the listing of a revision and its files' bytes, with errors classified."""

    def __init__(self, settings: Settings):
        self.settings, self.opener = settings, urllib.request.build_opener(_AuthOnlyToSameOrigin)  # honours *_proxy like the rest

    def get(self, url: str, what: str, start: int = 0) -> Any:
        request = urllib.request.Request(url, headers={"User-Agent": "vllm-platform-stage-model/1"})
        if start:
            request.add_header("Range", f"bytes={start}-")
        if self.settings.token:
            # Unredirected: urllib copies every other header onto a redirect, to whatever host it names.
            request.add_unredirected_header("Authorization", f"Bearer {self.settings.token}")
        try:
            return self.opener.open(request, timeout=HTTP_TIMEOUT_SECONDS)
        except urllib.error.HTTPError as error:
            try:
                raise self.refusal(error.code, error.headers.get("X-Error-Code", ""), error.headers, what) from None
            finally:
                error.close()
        except (OSError, http.client.HTTPException) as error:
            raise Transient(f"{what}: {describe(error)}") from error

    def refusal(self, status: int, code: str, headers: Any, what: str) -> Exception:
        s = self.settings
        if status == 429 or status >= 500:
            wait = headers.get("Retry-After", "")
            return Transient(f"{what}: HTTP {status} from the hub", float(wait) if wait.isdigit() else 0.0)
        access = (
            f"request access on {s.endpoint}/{s.repo} while logged in, then set the stack's hfToken to a token of that "
            "account: pulumi config set --secret vllm-platform:hfToken <token>"
        )
        held = "the token given has no access to it" if s.token else "no token was given"
        if code == "RepoNotFound":
            return Permanent(f"{s.repo} not found on {s.endpoint} (HTTP {status}); if it is private or gated, {access}")
        if code == "GatedRepo" or status in (401, 403):
            kind = "gated" if code == "GatedRepo" else "private or gated"
            return Permanent(f"{s.repo} is {kind} and {held} (HTTP {status}): {access}")
        if code == "RevisionNotFound":
            return Permanent(f"revision {s.revision} not found in {s.repo} (HTTP {status})")
        if code == "EntryNotFound" or status == 404:
            return Permanent(f"{what} not found in {s.repo}@{s.revision} (HTTP {status} {code})".rstrip())
        return Permanent(f"{what}: HTTP {status} {code}".rstrip())

    def listing(self) -> list[Entry]:
        s = self.settings
        what = f"listing {s.repo}@{s.revision}"
        url = f"{s.endpoint}/api/models/{urllib.parse.quote(s.repo)}/revision/{urllib.parse.quote(s.revision, safe='')}?blobs=true"

        def attempt() -> Any:
            with self.get(url, what) as response:
                try:
                    return json.loads(response.read())
                except (OSError, http.client.HTTPException) as error:
                    raise Transient(f"{what}: {describe(error)}") from error
                except ValueError as error:
                    raise Transient(f"{what}: the hub's answer is not JSON ({error})") from error

        return parse_listing(retrying(what, attempt), s)

    def open_file(self, entry: Entry, start: int) -> tuple[Any, int]:
        """The response that streams `entry` from byte `start`, and the byte it really starts from: 0 when
        the server ignored the Range and sends the whole file."""
        s = self.settings
        url = f"{s.endpoint}/{urllib.parse.quote(s.repo)}/resolve/{urllib.parse.quote(s.revision, safe='')}/{urllib.parse.quote(entry.path)}"
        response = self.get(url, entry.path, start)
        content_range = response.headers.get("Content-Range", "")
        if start and response.status == 200:
            start = 0
        elif start and not (response.status == 206 and content_range.startswith(f"bytes {start}-")):
            response.close()
            raise Transient(f"{entry.path}: asked for bytes {start}- and got HTTP {response.status} {content_range}")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) != entry.size - start:
            response.close()
            raise Permanent(f"{entry.path}: the hub serves {start + int(length)} bytes, its listing says {entry.size}")
        return response, start


def parse_listing(document: Any, s: Settings) -> list[Entry]:
    if not isinstance(document, dict) or not isinstance(document.get("siblings"), list):
        raise Permanent(f"the listing of {s.repo}@{s.revision} has no list of files: is HF_ENDPOINT a Hugging Face hub?")
    if document.get("sha") != s.revision:
        raise Permanent(f"the hub resolved {s.repo}@{s.revision} to commit {document.get('sha')!r}, not to itself")
    entries = []
    for sibling in document["siblings"]:
        path, size, lfs = (sibling.get(k) for k in ("rfilename", "size", "lfs")) if isinstance(sibling, dict) else (None,) * 3
        safe = isinstance(path, str) and "\\" not in path and all(p not in ("", ".", "..") for p in path.split("/"))
        good_lfs = lfs is None or (isinstance(lfs, dict) and SHA256.fullmatch(str(lfs.get("sha256"))) and lfs.get("size", size) == size)
        if not safe or type(size) is not int or size < 0 or not good_lfs:
            raise Permanent(f"the listing of {s.repo}@{s.revision} has a malformed file entry: {str(sibling)[:200]}")
        entries.append(Entry(path, size, lfs["sha256"] if lfs else None))
    return entries


class Backoff:
    """Bounded retries of one operation: at most MAX_ATTEMPTS failures in RETRY_DEADLINE_SECONDS."""

    def __init__(self, what: str):
        self.what, self.failures, self.since = what, 0, time.monotonic()

    def progressed(self) -> None:
        self.failures, self.since = 0, time.monotonic()

    def wait(self, error: Transient) -> None:
        self.failures += 1
        spent = time.monotonic() - self.since
        if self.failures >= MAX_ATTEMPTS or spent >= RETRY_DEADLINE_SECONDS:
            raise Transient(f"{error} (gave up after {self.failures} attempt(s) in {spent:.0f} s)") from error
        delay = max(BACKOFF_BASE_SECONDS * 2 ** (self.failures - 1), error.retry_after)
        delay = min(delay, BACKOFF_MAX_SECONDS, RETRY_DEADLINE_SECONDS - spent)
        print(f"retrying {self.what} in {delay:.1f} s: {error}", file=sys.stderr, flush=True)
        time.sleep(delay)


def retrying(what: str, attempt: Callable[[], T]) -> T:
    backoff = Backoff(what)
    while True:
        try:
            return attempt()
        except Transient as error:
            backoff.wait(error)


def read_exactly(response: Any, size: int, entry: Entry, at: int = 0) -> bytearray:
    """The next `size` bytes of `entry`'s body, which is at byte `at` of the file, or Transient: to http.client
    a cut connection looks like the body's end."""
    buffer, got = bytearray(size), 0
    view = memoryview(buffer)
    while got < size:
        try:
            count = response.readinto(view[got : min(size, got + CHUNK_SIZE)])
        except (OSError, http.client.HTTPException) as error:
            raise Transient(f"{entry.path}: {describe(error)} at byte {at + got} of {entry.size}") from error
        if not count:
            raise Transient(f"{entry.path}: the connection closed at byte {at + got} of {entry.size}")
        got += count
    return buffer


# S3's errors worth another try whatever their status: a 400 RequestTimeout or an expired session's token
# (Pod Identity refreshes it) is no reason to give up on a 140 GB copy.
S3_TRANSIENT = {"RequestTimeout", "ExpiredToken", "SlowDown", "InternalError", "ServiceUnavailable", "OperationAborted"}


def s3_failure(what: str, error: ClientError) -> Exception:
    code = error.response.get("Error", {}).get("Code", "?")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code not in S3_TRANSIENT and (code in ("AccessDenied", "NoSuchBucket") or status in (301, 400, 403)):
        return Permanent(f"{what}: S3 {code} (HTTP {status}): check the bucket, and that the Job's role may read and write it")
    return Transient(f"{what}: S3 {code} (HTTP {status})")


@dataclass
class _Upload:
    upload_id: str
    parts: list[dict[str, Any]]  # what CompleteMultipartUpload needs of each part, in order
    offset: int  # the bytes the parts hold: the next byte to fetch
    hasher: Optional[Any]  # None on a resumed upload: the kept parts' bytes went by in another run
    kept: int = 0  # the bytes of the parts an earlier run uploaded


class _Run:
    def __init__(self, settings: Settings, client: Any, log: Callable[[str], None]):
        self.settings, self.client, self.log, self.hub = settings, client, log, Hub(settings)

    def s3(self, what: str, operation: str, missing_ok: bool = False, items: str = "", **params: Any) -> Any:
        """`operation`'s answer; with `items`, a listing: those items of every page."""
        try:
            if items:
                pages = self.client.get_paginator(operation).paginate(Bucket=self.settings.bucket, **params)
                return [item for page in pages for item in page.get(items, [])]
            return getattr(self.client, operation)(Bucket=self.settings.bucket, **params)
        except ClientError as error:
            # S3 answers a read of a missing key with 403, not 404, to a caller whose s3:ListBucket does not
            # cover it: "missing" either way. A real denial surfaces at the write that follows.
            if missing_ok and error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied"):
                return None
            raise s3_failure(what, error) from error
        except NoCredentialsError as error:
            raise Permanent(f"{what}: no AWS credentials: is the Job's service account bound to its Pod Identity role?") from error
        except BotoCoreError as error:
            raise Transient(f"{what}: {error}") from error

    def stage(self) -> Result:
        s = self.settings
        if self.trusted():
            return Result([], True)
        files = select(self.hub.listing())
        if not any(e.path.endswith(".safetensors") for e in files):
            raise Permanent(
                f"{s.repo}@{s.revision} has no *.safetensors file: vLLM's runai_streamer load format reads safetensors "
                "only; choose a revision (or a repo) that has safetensors weights"
            )
        outcomes = []
        for entry in files:
            outcomes.append(self.copy(entry))
            self.log(outcomes[-1].line())
        self.prune(files)
        marker = json.dumps(self.document(files), indent=2).encode()
        self.s3("write the marker", "put_object", Key=s.marker_key, Body=marker, ContentType="application/json")
        count = {a: sum(o.action == a for o in outcomes) for a in ("copied", "resumed", "skipped")}
        self.log(
            f"staged {s.repo}@{s.revision} in s3://{s.bucket}/{s.prefix}: {len(files)} files, {count['copied']} copied, "
            f"{count['resumed']} resumed, {count['skipped']} skipped, {sum(o.transferred for o in outcomes)} bytes transferred; "
            f"marker s3://{s.bucket}/{s.marker_key}"
        )
        return Result(outcomes, False)

    def document(self, files: list[Entry]) -> dict[str, Any]:
        return {"repo": self.settings.repo, "revision": self.settings.revision, "files": [asdict(e) for e in files]}

    def trusted(self) -> bool:
        """Whether the marker is there, is what this script writes for the files it lists, and each of them is in
        S3 whole: then, a revision being a fixed commit, the copy is complete and the hub need not be asked. One that
        fails is deleted before any copy, so that a run that stops midway leaves no marker at all."""
        s = self.settings
        found = self.s3("read the marker", "get_object", missing_ok=True, Key=s.marker_key)
        if found is None:
            return False
        try:
            marked = json.loads(found["Body"].read())
            files = [Entry(**f) for f in marked["files"]]
            ours = marked == self.document(select(files)) and any(e.path.endswith(".safetensors") for e in files)
            wrong = None if ours else "it is not what this script writes for the files it lists"
        except (BotoCoreError, OSError, AttributeError, KeyError, TypeError, ValueError) as error:
            wrong = f"malformed: {type(error).__name__}: {error}"
        finally:
            found["Body"].close()
        wrong = wrong or next((f"{e.path} is not in S3 at {e.size} bytes" for e in files if not self.complete(e)), None)
        if wrong is None:
            self.log(f"already staged: s3://{s.bucket}/{s.marker_key} lists {len(files)} files, each in S3 whole; the hub was not asked")
            return True
        self.log(f"the marker {s.marker_key} is not trusted ({wrong}): deleted until every file is complete again")
        self.s3("delete the untrusted marker", "delete_object", Key=s.marker_key)
        return False

    def complete(self, entry: Entry) -> bool:
        """Whether `entry` is in S3 at its size, with its sha256 where the listing gave one."""
        head = self.s3(f"look up {entry.path}", "head_object", missing_ok=True, Key=self.settings.prefix + entry.path)
        return bool(head) and head.get("ContentLength") == entry.size and entry.sha256 in (None, head.get("Metadata", {}).get("sha256"))

    def prune(self, files: list[Entry]) -> None:
        """Delete what else the prefix holds: the streamer loads every safetensors file there, an earlier run's duplicates too."""
        keep = {self.settings.prefix + e.path for e in files}
        for found in self.s3("list the prefix", "list_objects_v2", items="Contents", Prefix=self.settings.prefix):
            if found["Key"] not in keep:
                self.s3(f"delete {found['Key']}", "delete_object", Key=found["Key"])
                self.log(f"deleted s3://{self.settings.bucket}/{found['Key']}: not a file of this copy")

    def copy(self, entry: Entry) -> Outcome:
        if self.complete(entry):
            return Outcome(entry.path, "skipped", entry.size, 0)
        return (self.copy_whole if entry.size < PART_SIZE else self.copy_parts)(entry, self.settings.prefix + entry.path)

    def copy_whole(self, entry: Entry, key: str) -> Outcome:
        """A file smaller than a part: fetched into memory, checked, put in one request."""

        def attempt() -> None:
            response, _ = self.hub.open_file(entry, 0)
            with response:
                data = read_exactly(response, entry.size, entry)
            digest = hashlib.sha256(data).hexdigest()
            if entry.sha256 and digest != entry.sha256:
                raise Transient(f"{entry.path}: sha256 {digest} of the bytes fetched is not the listing's {entry.sha256}")
            self.s3(f"upload {entry.path}", "put_object", Key=key, Body=data, Metadata=entry.metadata)

        retrying(f"copy {entry.path}", attempt)
        return Outcome(entry.path, "copied", entry.size, entry.size)

    def copy_parts(self, entry: Entry, key: str) -> Outcome:
        """A file of a part or more: streamed part by part into a multipart upload, resuming an earlier run's."""
        if -(-entry.size // PART_SIZE) > MAX_PARTS:
            raise Permanent(f"{entry.path}: {entry.size} bytes need more than S3's {MAX_PARTS} parts of {PART_SIZE} bytes")
        upload = self.resumable(entry, key)
        if upload is None:
            start = {"Key": key, "Metadata": entry.metadata, "ChecksumAlgorithm": PART_CHECKSUM}
            created = self.s3(f"start uploading {entry.path}", "create_multipart_upload", **start)
            upload = _Upload(created["UploadId"], [], 0, hashlib.sha256())
        backoff = Backoff(f"copy {entry.path}")
        while upload.offset < entry.size:
            try:
                self.stream_parts(entry, key, upload, backoff)
            except Transient as error:
                backoff.wait(error)  # the next attempt asks for the bytes after the last part uploaded
        if upload.hasher is not None and entry.sha256 and upload.hasher.hexdigest() != entry.sha256:
            self.s3(f"abort {entry.path}", "abort_multipart_upload", Key=key, UploadId=upload.upload_id)
            raise Transient(f"{entry.path}: sha256 {upload.hasher.hexdigest()} of the bytes fetched is not the listing's {entry.sha256}")
        parts = {"Parts": upload.parts}
        self.s3(f"complete {entry.path}", "complete_multipart_upload", Key=key, UploadId=upload.upload_id, MultipartUpload=parts)
        # A resumed file's earlier parts went by in another run, and S3 gives no read of an unfinished upload's
        # parts: so its whole object is read back and hashed once complete, and deleted if wrong. Parts were
        # checked by S3 as they arrived (the SDK's checksums); sizes line up by construction. Only a stop between
        # completing and this check leaves an object that the next run trusts on its size and sha256 metadata.
        if upload.hasher is None and entry.sha256:
            digest = self.hash_object(key, entry.path)
            if digest != entry.sha256:
                self.s3(f"delete {entry.path}", "delete_object", Key=key)
                raise Transient(f"{entry.path}: sha256 {digest} of the resumed object is not the listing's {entry.sha256}; deleted it")
        return Outcome(entry.path, "resumed" if upload.kept else "copied", entry.size, entry.size - upload.kept)

    def resumable(self, entry: Entry, key: str) -> Optional[_Upload]:
        """The latest unfinished upload of `key`, with its parts that tile the file from byte 0 at PART_SIZE."""
        listed = self.s3(f"list uploads of {entry.path}", "list_multipart_uploads", items="Uploads", Prefix=key)
        uploads = [u for u in listed if u["Key"] == key]
        if not uploads:
            return None
        upload_id = max(uploads, key=lambda u: u["Initiated"])["UploadId"]
        found = self.s3(f"list parts of {entry.path}", "list_parts", items="Parts", Key=key, UploadId=upload_id)
        upload = _Upload(upload_id, [], 0, None)
        for part in sorted(found, key=lambda p: p["PartNumber"]):
            if part["PartNumber"] != len(upload.parts) + 1 or part["Size"] != min(PART_SIZE, entry.size - upload.offset):
                break  # a gap, or parts of another size: from here the parts are uploaded again
            upload.parts.append(part_record(part))
            upload.offset += part["Size"]
        upload.kept, upload.hasher = upload.offset, None if upload.parts else hashlib.sha256()
        return upload

    def stream_parts(self, entry: Entry, key: str, upload: _Upload, backoff: Backoff) -> None:
        """Stream from upload.offset to the end, a part at a time, each part uploaded as soon as it is read."""
        response, start = self.hub.open_file(entry, upload.offset)
        with response:
            if start != upload.offset:  # the server ignored the Range: overwrite the parts from the first, hashing all
                upload.parts, upload.offset, upload.kept, upload.hasher = [], 0, 0, hashlib.sha256()
            while upload.offset < entry.size:
                data = read_exactly(response, min(PART_SIZE, entry.size - upload.offset), entry, upload.offset)
                number = len(upload.parts) + 1
                part = {"Key": key, "UploadId": upload.upload_id, "PartNumber": number, "Body": data, "ChecksumAlgorithm": PART_CHECKSUM}
                answer = self.s3(f"upload part {number} of {entry.path}", "upload_part", **part)
                upload.parts.append(part_record({**answer, "PartNumber": number}))
                upload.offset += len(data)
                if upload.hasher is not None:
                    upload.hasher.update(data)
                backoff.progressed()

    def hash_object(self, key: str, path: str) -> str:
        def attempt() -> str:
            body = self.s3(f"read back {path}", "get_object", Key=key)["Body"]
            digest = hashlib.sha256()
            try:
                for chunk in body.iter_chunks(CHUNK_SIZE):
                    digest.update(chunk)
            except (BotoCoreError, OSError) as error:
                raise Transient(f"read back {path}: {error}") from error
            finally:
                body.close()
            return digest.hexdigest()

        return retrying(f"read back {path}", attempt)


def part_record(part: Mapping[str, Any]) -> dict[str, Any]:
    """A part as CompleteMultipartUpload takes it: number, ETag, and whichever checksum the SDK sent."""
    record = {k: v for k, v in part.items() if k.startswith("Checksum") and k != "ChecksumType"}
    return {"PartNumber": part["PartNumber"], "ETag": part["ETag"], **record}


def stage(settings: Settings, client: Any = None, log: Callable[[str], None] = lambda line: print(line, flush=True)) -> Result:
    """Stage the revision `settings` names; raises Permanent or Transient. `client`: an S3 client to use."""
    if client is None:
        try:
            client = boto3.client("s3", config=S3_CONFIG)
        except BotoCoreError as error:
            raise Permanent(f"S3 client: {error}") from error
    return _Run(settings, client, log).stage()


def fail(reason: str, code: int) -> int:
    """Report `reason` on one line, on stderr and in the pod's termination message (when Kubernetes made one)."""
    line = " ".join(reason.split())[:4000]  # Kubernetes keeps 4096 bytes of it
    print(line, file=sys.stderr, flush=True)
    if os.path.isfile(TERMINATION_LOG) and os.access(TERMINATION_LOG, os.W_OK):
        with contextlib.suppress(OSError), open(TERMINATION_LOG, "w", encoding="utf-8") as handle:
            handle.write(line + "\n")
    return code


def main() -> int:
    try:
        stage(Settings.from_env(os.environ))
    except Permanent as error:
        return fail(str(error), EXIT_PERMANENT)
    except Transient as error:
        return fail(str(error), EXIT_TRANSIENT)
    except Exception as error:  # what nothing above foresaw: the traceback for us, the line for the pod's status
        traceback.print_exc()
        return fail(f"unexpected {type(error).__name__}: {error}", EXIT_TRANSIENT)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
