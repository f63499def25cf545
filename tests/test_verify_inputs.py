"""What verify takes from its user and prints back: --url must be a clean base URL, and the report escapes
what it prints, a control character in the user's own --model included."""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import pytest

from tests.test_verify import FAST, MODEL, VllmDouble, serving
from tools.verify import checks as verdicts
from tools.verify import cli, client, report, stack

# Nothing listens on port 9 of loopback here; a refused URL must be refused before any request is made.
BASE = "http://127.0.0.1:9"
QUERY = "has a query or fragment; verify appends its own paths (/health, /v1/models) to a base URL"


@pytest.fixture
def double() -> Iterator[Any]:
    yield from serving(VllmDouble)


@pytest.mark.parametrize(
    "url, why",
    [
        (f"{BASE}/ x", "has whitespace or a control character"),
        (f"{BASE}/\tx", "has whitespace or a control character"),
        (f"{BASE}/x\n", "has whitespace or a control character"),
        # urlsplit strips a newline from the host too, and would reach 127.0.0.1.
        ("http://127.0.0.\n1:9", "has whitespace or a control character"),
        (f"{BASE}/\x1b[2J", "has whitespace or a control character"),
        (f"{BASE}/\u200bx", "has whitespace or a control character"),
        (f"{BASE}/\u00a0x", "has whitespace or a control character"),
        (f"{BASE}/x?api-version=1", QUERY),
        (f"{BASE}?", QUERY),
        (f"{BASE}/#top", QUERY),
        ("ftp://127.0.0.1:9", "is not an http(s) URL such as http://127.0.0.1:8000"),
        ("file:///tmp/x", "is not an http(s) URL such as http://127.0.0.1:8000"),
        ("127.0.0.1:9", "is not an http(s) URL such as http://127.0.0.1:8000"),
    ],
    ids=["space", "tab", "newline", "newline in the host", "escape", "zero-width space", "no-break space", "query", "empty query", "fragment", "ftp", "file", "no scheme"],
)
def test_a_url_that_is_no_clean_base_url_is_a_one_line_usage_error(url, why, capsys):
    assert cli.main(["--url", url, "--model", MODEL, *FAST]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    # One line, and no progress line before it: refused before any request.
    assert err.splitlines() == [f"{cli.parser().prog}: error: --url {url!r} {why}"]


@pytest.mark.parametrize(
    "url",
    [BASE, f"{BASE}/", f"{BASE}/x", f"{BASE}/x/", f"{BASE}/%20x", f"{BASE}/x%3Fq", "https://127.0.0.1:9/v1", "http://[::1]:9/x"],
    ids=["bare", "slash", "path", "path and slash", "escaped space", "escaped question mark", "https", "IPv6"],
)
def test_a_clean_base_url_with_or_without_a_path_is_accepted(url) -> None:
    assert stack.target_from_url(url, MODEL) == verdicts.Target(MODEL, MODEL, url)


def test_a_base_url_is_checked_as_given(double, capsys):
    """The trailing slash of an accepted URL does not double verify's paths."""
    server = double()
    assert cli.main(["--url", f"{server.url}/", "--model", MODEL, *FAST]) == cli.EXIT_PASSED
    capsys.readouterr()


@pytest.mark.parametrize("endpoint", ["https://llm.example.com/v1?x=1", "https://llm.example.com/v1#x", "https://llm.example.com/v1\n"])
def test_the_stacks_endpoint_is_held_to_the_same_base_url(endpoint) -> None:
    with pytest.raises(verdicts.UsageError, match="is not an OpenAI base URL"):
        stack.gateway_base_url(endpoint)


def test_the_table_escapes_what_it_prints() -> None:
    checks = [
        verdicts.Check("llama\x1b[2J\n8b", "models", False, "'llama\\x1b' not listed"),
        verdicts.Check("qwen", "health\r", True, "answered\t200\x07"),
    ]
    assert report.render_table(checks).splitlines() == [
        "MODEL             CHECK     STATUS  DETAIL",
        "llama\\x1b[2J\\n8b  models    FAIL    'llama\\x1b' not listed",
        "qwen              health\\r  PASS    answered\\t200\\x07",
        "FAIL: 1 of 2 checks failed",
    ]


def test_a_control_character_in_the_users_model_reaches_no_terminal(double, capsys):
    """The table, the progress lines and JSON alike: one line per check, no escape sequence as it is."""
    server = double()
    model = "llama\x1b]0;owned\x07\n-8b"
    assert cli.main(["--url", server.url, "--model", model, *FAST]) == cli.EXIT_FAILED
    out, err = capsys.readouterr()
    assert not any(c in out + err for c in "\x1b\x07")
    assert "verify: llama\\x1b]0;owned\\x07\\n-8b: GET " in err
    lines = out.splitlines()
    assert len(lines) == 1 + 4 + 1 and all(line.startswith("llama\\x1b]0;owned\\x07\\n-8b  ") for line in lines[1:-1])
    assert server.chat_requests == [], "the model check failed: the double serves another name"
    code, result = cli.main(["--url", server.url, "--model", model, *FAST, "--json"]), capsys.readouterr().out
    assert code == cli.EXIT_FAILED and "\x1b" not in result and "\\u001b" in result


def test_a_concurrency_above_the_cap_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--url", BASE, "--model", MODEL, "--requests", "2000", "--concurrency", str(cli.MAX_CONCURRENCY + 1)])
    assert exited.value.code == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and f"--concurrency: must be <= {cli.MAX_CONCURRENCY}, got {cli.MAX_CONCURRENCY + 1}" in err


@pytest.mark.parametrize("requests, refused", [(cli.MAX_REQUESTS + 1, True), (cli.MAX_REQUESTS, False)])
def test_more_requests_than_a_check_needs_is_a_usage_error(requests, refused, capsys):
    argv = ["--url", BASE, "--model", MODEL, "--requests", str(requests)]
    if not refused:
        assert cli.parser().parse_args(argv).requests == cli.MAX_REQUESTS
        return
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == cli.EXIT_USAGE
    assert f"--requests: must be <= {cli.MAX_REQUESTS}, got {requests}" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--timeout", "--p95-slo", "--wait-ready", "--restart-window", "--deadline"])
@pytest.mark.parametrize("seconds, refused", [(cli.MAX_SECONDS * 10, True), (cli.MAX_SECONDS, False)])
def test_a_span_of_seconds_no_timer_can_hold_is_a_usage_error(flag, seconds, refused, capsys):
    """1e10 s overflows a timer and a socket timeout, 1e14 s a timedelta: refused up front, not a traceback later."""
    argv = ["--url", BASE, "--model", MODEL, flag, f"{seconds:g}"]
    if not refused:
        assert cli.parser().parse_args(argv)
        return
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == cli.EXIT_USAGE
    assert f"{flag}: must be <= {cli.MAX_SECONDS:g}, got {seconds:g}" in capsys.readouterr().err


def test_a_worker_thread_that_cannot_start_fails_its_completions_without_a_traceback(double, monkeypatch, capsys):
    server = double()
    start = threading.Thread.start

    def refusing(thread: threading.Thread) -> None:
        # The pool's first worker starts; the system refuses every other, as under a memory limit.
        if thread.name.startswith("ThreadPoolExecutor") and not thread.name.endswith("_0"):
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refusing)
    code = cli.main(["--url", server.url, "--model", MODEL, "--requests", "4", "--concurrency", "4", "--timeout", "2", "--json"])
    out, _ = capsys.readouterr()
    checks = {c["check"]: c for c in json.loads(out)["checks"]}
    assert code == cli.EXIT_FAILED
    assert checks["completions"]["detail"] == "3/4 failed: cannot start a thread: can't start new thread x3"
    assert checks["latency-p95"]["status"] == "PASS", "the one worker that started measured its completion"


def test_a_request_whose_watchdog_cannot_start_is_a_failed_request(double, monkeypatch):
    server = double()

    def refusing(self: Any, seconds: float) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(client._Watchdog, "arm", refusing)
    response = client.http_request(f"{server.url}/health", 2)
    assert response.status is None and response.error == "cannot start a thread: can't start new thread"


@pytest.mark.parametrize("url", ["http://user:hunter2@127.0.0.1:9", "http://hunter2@127.0.0.1:9/v1", "http://u:hunter2@127.0.0.1:9/\n"])
def test_a_url_with_a_password_is_a_usage_error_that_does_not_print_it(url, capsys):
    assert cli.main(["--url", url, "--model", MODEL, *FAST]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and "hunter2" not in err
    assert err.splitlines() == [f"{cli.parser().prog}: error: --url has a user name or password (USER:PASSWORD@HOST); verify sends no credentials in a URL"]
