"""Copy one Hugging Face model revision into the S3 model cache, resumably: the staging Job runs this.

It is mounted from a ConfigMap with its sibling modules (hub.py, the hub's side; retry.py, the failures and their
bounded retries) as the package `staging`, and run as `python3 -m staging.stage_model` in public.ecr.aws/lambda/python:3.12:
the standard library and botocore (boto3's) only, nothing else from vllm_platform.

Environment:
  HF_REPO        org/name on the hub, e.g. meta-llama/Llama-3.1-8B-Instruct.
  HF_REVISION    the commit to copy, 40 lowercase hex digits: a branch or tag would move under the cache.
  HF_ENDPOINT    the hub, default https://huggingface.co.
  HF_TOKEN_PATH  optional file holding the token (a mounted Secret); absent or empty: no token.
  CACHE_BUCKET   the destination bucket.
  CACHE_PREFIX   the destination, models/<org>/<name>/<revision>/ (it must end with "/").
  AWS_*          boto3's default chain: EKS Pod Identity in production, AWS_ENDPOINT_URL and keys in tests. Credentials
                 that are not there yet are waited for, up to CREDENTIALS_GRACE_SECONDS: a Pod Identity association
                 takes a few seconds to take effect.

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
import json
import os
import re
import sys
import time
import traceback
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Optional

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from .hub import CHUNK_SIZE, HTTP_TIMEOUT_SECONDS, Entry, Hub, read_exactly
from .retry import Backoff, Permanent, Transient, retrying

EXIT_OK, EXIT_TRANSIENT, EXIT_PERMANENT = 0, 1, 2
TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' terminationMessagePath; tests point it elsewhere
DEFAULT_ENDPOINT = "https://huggingface.co"
PART_SIZE = 64 * 1024 * 1024  # one part is all a copy holds in memory; S3 wants >= 5 MiB but for the last
MAX_PARTS = 10_000  # S3's limit per upload: 625 GiB per file at 64 MiB parts
# Named, so that the upload, each of its parts and its completion agree on one checksum whichever boto3 the
# image ships (boto3 1.36 began to add CRC32 by default, earlier ones none), a resumed run's included.
PART_CHECKSUM = "CRC32"
S3_CONFIG = Config(connect_timeout=HTTP_TIMEOUT_SECONDS, read_timeout=HTTP_TIMEOUT_SECONDS, retries={"mode": "standard", "max_attempts": 5})

REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
REVISION = re.compile(r"[0-9a-f]{40}")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# What vLLM reads to serve: safetensors weights, configs and tokenizers. Every .json and .txt is taken, since configs,
# generation settings, tokenizers, chat templates and vocabularies (merges.txt, vocab.txt) come under many names
# (params.json is a Mistral-only repo's config): small files, a LICENSE.txt among them costing nothing. Other weight
# formats are duplicates at best, and Llama repos keep a second copy of their weights as .pth under original/.
WANTED = re.compile(r".*\.(?:safetensors|json|tiktoken|jinja|txt)|(?:.*/)?(?:tokenizer\.model|vocab\.[^/]+)")
UNWANTED = re.compile(r".*\.(?:bin|pth|pt|gguf|h5|msgpack|onnx)")
# Mistral repos keep their weights twice: Hugging Face shards and Mistral's own consolidated*.safetensors. vLLM's
# runai_streamer loader reads every safetensors file under the prefix, with no index to drop duplicates, and may
# take the Mistral format when consolidated files are there: so they are copied only when they are all there is.
HF_WEIGHTS = re.compile(r"model[^/]*\.safetensors(?:\.index\.json)?")
CONSOLIDATED = re.compile(r"consolidated[^/]*\.safetensors(?:\.index\.json)?")


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


# A pod admitted before its service account's EKS Pod Identity association has taken effect finds no credentials,
# or an agent that cannot give them yet: associations "are eventually consistent, and may take several seconds to
# be effective" (EKS API Reference, CreatePodIdentityAssociation). A timing problem, so it is waited out in the pod
# for a while, bounded in count and time; past that the failure is Transient (exit 1), so that the Job's next pod,
# admitted anew, can get what this one was admitted without, within the Job's backoffLimit.
CREDENTIALS_GRACE_SECONDS = 75.0
CREDENTIALS_ATTEMPTS = 8  # waits of 1, 2, 4, 8, 16 and 30 s, then the 14 s left: the two bounds meet
NO_CREDENTIALS = (
    "no AWS credentials: EKS Pod Identity gave this pod none. Its association with the staging Job's service account "
    "may not have taken effect when the pod started (the Job's next pod tries again), or is missing: "
    "aws eks list-pod-identity-associations --cluster-name <cluster> --namespace <the models' namespace>"
)


# The SDK's service models and endpoints, read from its data files once for every session below: they hold no
# credentials, and reading them again takes a tenth of a second per session.
DATA_LOADER = botocore.loaders.create_loader()


def s3_client(sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> Any:
    """An S3 client with the credentials the SDK's default chain finds, waiting for them up to CREDENTIALS_GRACE_SECONDS.

    Each look is a new session: a session resolves its credentials once, and a client made without any never
    finds them later. `sleep` and `clock` are time's own but where a test steps them."""
    backoff = Backoff("looking for AWS credentials", CREDENTIALS_ATTEMPTS, CREDENTIALS_GRACE_SECONDS, sleep, clock)
    while True:  # bounded by the backoff, which raises once the count or the grace is spent
        session = botocore.session.Session()
        session.register_component("data_loader", DATA_LOADER)
        try:
            found = session.get_credentials() is not None
            missing = Transient(NO_CREDENTIALS)
        except BotoCoreError as error:  # a source that is there but cannot answer yet: the Pod Identity agent
            found, missing = False, Transient(f"{NO_CREDENTIALS} ({error})")
        if found:
            try:
                return session.create_client("s3", config=S3_CONFIG)
            except BotoCoreError as error:
                raise Permanent(f"S3 client: {error}") from error
        backoff.wait(missing)


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
        except NoCredentialsError as error:  # only on a client made elsewhere: s3_client() waits for credentials first
            raise Transient(f"{what}: {NO_CREDENTIALS}") from error
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
    return _Run(settings, client if client is not None else s3_client(), log).stage()


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
