"""The Hugging Face hub's side of a staging copy: a revision's listing and its files' bytes, with errors classified.

Standard library only: the staging Job's pod carries this package from its ConfigMap and nothing else of the project.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from .retry import Permanent, Transient, retrying

CHUNK_SIZE = 1024 * 1024  # one socket read
HTTP_TIMEOUT_SECONDS = 60.0  # to connect, and for each read: a stalled CDN is a transient failure
MAX_REDIRECTS = 5
SHA256 = re.compile(r"[0-9a-f]{64}")


class Revision(Protocol):
    """What the hub's side reads of the settings: which revision of which repo, where, and the token if any."""

    endpoint: str
    repo: str
    revision: str
    token: Optional[str]


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: Optional[str]  # LFS files only: the listing gives no sha256 of the others

    @property
    def metadata(self) -> dict[str, str]:
        return {"sha256": self.sha256} if self.sha256 else {}  # what a later run checks the object against


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

    def __init__(self, settings: Revision):
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


def parse_listing(document: Any, s: Revision) -> list[Entry]:
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

