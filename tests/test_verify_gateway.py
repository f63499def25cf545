"""tools.verify --via-gateway against a stand-in for the gateway on loopback: keys, per-model authorization,
and the same completions and p95 as on the direct path, reached as a client reaches them."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any, Iterator, Optional

import pytest

from tests import test_verify as direct
from tests.test_verify import (
    FAST,
    MODEL,
    ONE_MODEL,
    VllmDouble,
    _VllmHandler,
    kubeconfig_for,
    made_calls,
    run_json,
    serving,
    write_stack_file,
)
from tools.verify import checks as verdicts
from tools.verify import cli, client, probe, stack
from vllm_platform.k8s.gateway import ERROR_RESPONSES

# The direct path's fixtures, bound here by assignment: the stack's outputs from a stand-in `pulumi` on PATH,
# and a port that refuses connections.
fake_pulumi, refused_url = direct.fake_pulumi, direct.refused_url

OTHER = "qwen-7b"
KEY = "sk-verify-3f9a1c7e5b"
KEY_VARIABLE = "VERIFY_GATEWAY_KEY"
# A stack with no Pulumi.<stack>.yaml here: the p95 SLO is verify's default unless a flag says otherwise.
STACK = "gw"
VIA_GATEWAY = ["--stack", STACK, "--via-gateway", "--api-key-env", KEY_VARIABLE]
GATEWAY_CHECKS = ("key-required", "key-allowed", "completions", "latency-p95")
KEYLESS_REFUSED = "refused with 401 without a key: POST /v1/chat/completions, GET /v1/models"
UNKNOWN_MODEL_PASSED = [
    "(gateway)", "unknown-model", "PASS", f"404 model_not_found: {probe.UNKNOWN_MODEL!r}, which no route serves"]
# Without --client, verify cannot tell a key scoped to some models from one the gateway wrongly refuses.
PASS_THE_CLIENT = "; for a key scoped to some models, pass --client NAME (its gateway.clients entry) to expect 403 for the others"


class GatewayDouble(VllmDouble):
    """The gateway as a client meets it: 401 without `Authorization: Bearer <a known key>`, 403 for a served model
    outside that key's list, 404 for a model it does not serve (as AI Gateway's route-not-found, after the
    authorization rules, which name served models only) and off the two OpenAI paths verify uses; otherwise the
    vLLM double's answer. `unknown_status`: what a model it does not serve gets instead, as a gateway whose
    responseOverride is missing (a bare 404) or that sends every model somewhere."""

    def __init__(
        self,
        keys: Optional[dict[str, tuple[str, ...]]] = None,
        keyless_passes: bool = False,
        models_listed_keyless: bool = False,
        unready: int = 0,
        unknown_status: Optional[int] = None,
        **variant: Any,
    ):
        super().__init__(served=(MODEL, OTHER), **variant)
        self.unknown_status = unknown_status
        self.RequestHandlerClass = _GatewayHandler  # the vLLM double's handler, behind the gateway's own checks
        self.keys = {KEY: (MODEL, OTHER)} if keys is None else keys
        self.keyless_passes = keyless_passes  # a gateway without its key check: keyless requests reach the models
        # AI Gateway's extproc before the key check: it answers the model list to anyone.
        self.models_listed_keyless = models_listed_keyless
        self.unready = unready  # this many allowed completions answer 503 first, as before a model's route is up
        self.authorizations: list[Optional[str]] = []  # each request's Authorization header, None without one
        self.paths: list[str] = []
        self.refused: Counter[tuple[int, str]] = Counter()  # (status, model) of each 401 and 403


class _GatewayHandler(_VllmHandler):
    server: GatewayDouble

    def _error(self, status: int) -> None:
        """The refusal as the gateway's responseOverride renders it, in OpenAI's error shape."""
        self._reply(status, json.loads(dict(ERROR_RESPONSES)[status]))

    def _refused(self, model: Optional[str]) -> bool:
        """The key check, then the key's models, in Envoy Gateway's order; True when it answered the refusal."""
        header = self.headers.get("Authorization")
        with self.server.lock:
            self.server.authorizations.append(header)
        key = header.removeprefix("Bearer ") if header and header.startswith("Bearer ") else None
        if key is None and self.server.keyless_passes:
            return False
        refusal = None
        if key not in self.server.keys:
            refusal = 401
        elif model in self.server.served and model not in self.server.keys[key]:
            refusal = 403
        if refusal is None:
            return False
        with self.server.lock:
            self.server.refused[(refusal, str(model))] += 1
        self._error(refusal)
        return True

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path != "/v1/models":
            self._error(404)
        elif self.server.models_listed_keyless or not self._refused(None):
            super().do_GET()

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.paths.append(self.path)
        if self.path != "/v1/chat/completions":
            self._error(404)
            return
        if self._refused(request.get("model")):
            return
        if request.get("model") not in self.server.served:
            if self.server.unknown_status is None:
                self._error(404)
            elif self.server.unknown_status == 404:
                self._reply(404, {"detail": "Not Found"})  # not OpenAI's shape
            else:
                self._complete(request)
            return
        with self.server.lock:
            unready = self.server.unready > 0
            self.server.unready -= unready
        if unready:
            self._reply(503, {"error": {"message": "no healthy upstream"}})
            return
        self._complete(request)


@pytest.fixture
def gateway() -> Iterator[Any]:
    yield from serving(GatewayDouble)


def gateway_outputs(server: GatewayDouble, endpoint: Any = "") -> dict[str, Any]:
    """The stack's outputs with its gateway on: the endpoint, and each model's gatewayModelName beside the rest."""
    models = {
        name: {
            "serviceUrl": f"http://{name}.vllm.svc.cluster.local:8000",
            "servedModelName": served,
            "gatewayModelName": served,
            "port": 8000,
        }
        for name, served in ((MODEL, MODEL), ("qwen", OTHER))
    }
    return {"namespace": "vllm", "endpoint": endpoint or f"{server.url}/v1", "models": models}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["model"], c["check"], c["status"]) for c in result["checks"]]


def details(result: dict[str, Any], model: str) -> dict[str, str]:
    return {c["check"]: c["detail"] for c in result["checks"] if c["model"] == model}


def test_every_model_passes_through_the_gateway_with_the_right_key(gateway, fake_pulumi, refused_url, monkeypatch, capsys):
    """The stack's kubeconfig goes unused: it names a cluster that refuses connections, and no check asks it."""
    server = gateway()
    calls = fake_pulumi(gateway_outputs(server), kubeconfig=kubeconfig_for(refused_url))
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    code = cli.main([*VIA_GATEWAY, *FAST, "--json"])
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert code == cli.EXIT_PASSED, result
    assert rows(result) == [(model, check, "PASS") for model in (MODEL, "qwen") for check in GATEWAY_CHECKS] + [
        (verdicts.GATEWAY_ROW, "unknown-model", "PASS")]
    assert details(result, verdicts.GATEWAY_ROW)["unknown-model"] == f"404 model_not_found: {probe.UNKNOWN_MODEL!r}, which no route serves"
    assert details(result, "qwen")["key-required"] == KEYLESS_REFUSED
    assert details(result, "qwen")["key-allowed"] == f"this key may use {OTHER}"
    assert details(result, "qwen")["completions"] == "4/4 succeeded"
    assert made_calls(calls, STACK)
    # Two keyless requests per model; every other one carries the key, and each completion names its gatewayModelName.
    assert server.authorizations.count(None) == 4 and set(server.authorizations) == {None, f"Bearer {KEY}"}
    assert Counter(r["model"] for r in server.chat_requests) == {MODEL: 1 + 4, OTHER: 1 + 4}
    assert set(server.paths) == {"/v1/models", "/v1/chat/completions"}, "the endpoint's /v1 is not doubled"
    assert "port-forward" not in err and "kubeconfig" not in err
    assert KEY not in out and KEY not in err


@pytest.mark.parametrize(
    "gap, answered",
    [
        pytest.param({"keyless_passes": True}, "POST /v1/chat/completions", id="no-key-check"),
        # As AI Gateway's extproc would if it ran before the key check; completions are still refused.
        pytest.param({"models_listed_keyless": True}, "GET /v1/models", id="models-listed-before-the-key-check"),
    ],
)
def test_a_gateway_that_answers_without_a_key_fails_key_required(gap, answered, gateway, fake_pulumi, monkeypatch, capsys):
    server = gateway(**gap)
    fake_pulumi(gateway_outputs(server))
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    code, result = run_json(capsys, *VIA_GATEWAY, *FAST)
    assert code == cli.EXIT_FAILED
    failed = [(model, check) for model, check, status in rows(result) if status == "FAIL"]
    assert failed == [(MODEL, "key-required"), ("qwen", "key-required")]
    assert details(result, MODEL)["key-required"] == f"{answered}: HTTP 200 without a key; the gateway must refuse it with 401"


def test_a_key_scoped_to_some_models_shows_which(gateway, fake_pulumi, monkeypatch, capsys):
    server = gateway(keys={KEY: (MODEL,)})
    fake_pulumi(gateway_outputs(server))
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    code = cli.main([*VIA_GATEWAY, *FAST])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_FAILED
    table = [line.split(None, 3) for line in out.splitlines()[1:-1]]
    assert [row[:3] for row in table[:4]] == [[MODEL, check, "PASS"] for check in GATEWAY_CHECKS]
    assert table[1][3] == f"this key may use {MODEL}"
    assert table[4:] == [
        ["qwen", "key-required", "PASS", KEYLESS_REFUSED],
        ["qwen", "key-allowed", "FAIL", f"403: this key may not use {OTHER}{PASS_THE_CLIENT}"],
        ["qwen", "completions", "FAIL", "skipped: the key-allowed check failed"],
        ["qwen", "latency-p95", "FAIL", "skipped: the key-allowed check failed"],
        UNKNOWN_MODEL_PASSED,
    ]
    assert out.splitlines()[-1] == "FAIL: 3 of 9 checks failed"
    assert server.refused == {(401, MODEL): 1, (401, OTHER): 1, (401, "None"): 2, (403, OTHER): 1}, "one 403, then no completions"
    assert "Traceback" not in err and KEY not in out + err


def scoped_stack(directory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pulumi.gw.yaml with both models and two clients: `batch` may use only MODEL's, `apps` both."""
    models = [
        {"name": MODEL, "model": "meta-llama/Llama-3.1-8B-Instruct", "gpuPool": "g5"},
        {"name": "qwen", "model": "Qwen/Qwen2.5-7B-Instruct", "gpuPool": "g5"},
    ]
    clients = [
        {"name": name, "apiKey": {"secure": f"AAABAPLACEHOLDER{name}"}, "models": allowed, "tokensPerMinute": 1000}
        for name, allowed in (("batch", [MODEL]), ("apps", [MODEL, "qwen"]))
    ]
    write_stack_file(directory, STACK, models=models, gateway={"enabled": True, "clients": clients})
    monkeypatch.setattr(stack, "PROJECT_ROOT", directory)


BATCH_REFUSED = ["qwen", "key-refused", "PASS", f"403 {verdicts.MODEL_NOT_ALLOWED}: client batch may not use {OTHER}"]


def test_a_scoped_key_passes_with_its_client_named(gateway, fake_pulumi, tmp_path, monkeypatch, capsys):
    """prod's batch-summaries case: the key may use one model of two, and the other's 403 is what passes."""
    server = gateway(keys={KEY: (MODEL,)})
    calls = fake_pulumi(gateway_outputs(server))
    scoped_stack(tmp_path, monkeypatch)
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    code = cli.main([*VIA_GATEWAY, "--client", "batch", *FAST])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_PASSED, out
    table = [line.split(None, 3) for line in out.splitlines()[1:-1]]
    assert [row[:3] for row in table[:4]] == [[MODEL, check, "PASS"] for check in GATEWAY_CHECKS]
    assert table[4:] == [["qwen", "key-required", "PASS", KEYLESS_REFUSED], BATCH_REFUSED, UNKNOWN_MODEL_PASSED]
    assert out.splitlines()[-1] == "PASS: all 7 checks passed"
    assert server.refused[(403, OTHER)] == 1 and all(r["model"] == MODEL for r in server.chat_requests), "one 403, no completions"
    assert made_calls(calls, STACK) and KEY not in out + err


def test_a_gateway_that_lets_a_scoped_key_use_a_model_outside_its_list_fails(gateway, fake_pulumi, tmp_path, monkeypatch, capsys):
    server = gateway(keys={KEY: (MODEL, OTHER)})
    fake_pulumi(gateway_outputs(server))
    scoped_stack(tmp_path, monkeypatch)
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    code, result = run_json(capsys, *VIA_GATEWAY, "--client", "batch", *FAST)
    assert code == cli.EXIT_FAILED
    assert [row for row in rows(result) if row[2] == "FAIL"] == [("qwen", "key-refused", "FAIL")]
    assert details(result, "qwen")["key-refused"] == f"HTTP 200: the key may use {OTHER}, which client batch's list does not name"
    assert "completions" not in details(result, "qwen")


def test_a_key_refused_a_model_its_client_lists_asks_whose_key_it_is(gateway, fake_pulumi, tmp_path, monkeypatch, capsys):
    server = gateway(keys={KEY: (MODEL,)})
    fake_pulumi(gateway_outputs(server))
    scoped_stack(tmp_path, monkeypatch)
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    code, result = run_json(capsys, *VIA_GATEWAY, "--client", "apps", *FAST)
    assert code == cli.EXIT_FAILED
    assert details(result, "qwen")["key-allowed"] == f"403: this key may not use {OTHER}; gateway.clients lists it for client apps: is the key apps's?"


@pytest.mark.parametrize(
    "name, accepted",
    [
        *[(name, True) for name in ("batch", "apps")],
        *[(name, False) for name in ("batc", "Batch", "batch ", "", "batch\n", "batch-summaries")],
    ],
    ids=["batch", "apps", "a prefix", "upper case", "trailing space", "empty", "newline", "another stack's client"],
)
def test_the_client_must_be_one_of_the_stacks_gateway_clients(name, accepted, gateway, fake_pulumi, tmp_path, monkeypatch, capsys):
    server = gateway(keys={KEY: (MODEL,)})
    calls = fake_pulumi(gateway_outputs(server))
    scoped_stack(tmp_path, monkeypatch)
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    code = cli.main([*VIA_GATEWAY, "--client", name, *FAST])
    out, err = capsys.readouterr()
    if accepted:
        assert code != cli.EXIT_USAGE and calls.exists()
        return
    assert code == cli.EXIT_USAGE and out == ""
    assert err.splitlines() == [f"{cli.parser().prog}: error: --client {name!r}: Pulumi.gw.yaml has no such gateway.clients entry (its clients: batch, apps)"]
    assert not calls.exists(), "the client is looked up before the stack's outputs"


def test_a_client_needs_the_stack_file_to_read_its_models_from(fake_pulumi, monkeypatch, capsys):
    calls = fake_pulumi({"endpoint": "https://llm.example.com/v1", **ONE_MODEL})
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    assert cli.main([*VIA_GATEWAY, "--client", "batch"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [
        f"{cli.parser().prog}: error: --client 'batch': no Pulumi.{STACK}.yaml here to read gateway.clients from"
    ]
    assert not calls.exists()


def test_prods_clients_come_from_its_stack_file_through_the_config_model() -> None:
    assert stack.key_scope("prod", "batch-summaries") == verdicts.KeyScope("batch-summaries", frozenset({"llama-8b"}))
    assert stack.key_scope("acme/vllm-platform/prod", "chat-app") == verdicts.KeyScope("chat-app", frozenset({"llama-8b", "llama-70b"}))


# The 403 body the gateway renders, and near misses of it: another shape, another code, Envoy's own plain-text refusal.
GATEWAY_403 = dict(ERROR_RESPONSES)[403].encode()


@pytest.mark.parametrize(
    "response, passed, detail",
    [
        (client.Response(403, GATEWAY_403, 0.01), True, f"403 {verdicts.MODEL_NOT_ALLOWED}: client batch may not use {MODEL}"),
        (
            client.Response(403, b"RBAC: access denied", 0.01),
            False,
            f"HTTP 403: RBAC: access denied; not the gateway's OpenAI error (code {verdicts.MODEL_NOT_ALLOWED})",
        ),
        (
            client.Response(403, GATEWAY_403.replace(b"model_not_allowed", b"forbidden"), 0.01),
            False,
            f"HTTP 403: {client.printable(GATEWAY_403.decode().replace('model_not_allowed', 'forbidden'))}; not the gateway's OpenAI error (code {verdicts.MODEL_NOT_ALLOWED})",
        ),
        (
            client.Response(403, b'{"error": "model_not_allowed"}', 0.01),
            False,
            f'HTTP 403: {{"error": "model_not_allowed"}}; not the gateway\'s OpenAI error (code {verdicts.MODEL_NOT_ALLOWED})',
        ),
        (client.Response(401, b'{"error": {}}', 0.01), False, "401: the gateway does not accept this key"),
        (client.Response(200, b'{"choices": []}', 0.01), False, f"HTTP 200: the key may use {MODEL}, which client batch's list does not name"),
        (client.Response(404, b"", 0.01), False, f"HTTP 404; expected 403 model_not_allowed: client batch may not use {MODEL}"),
        (client.Response(None, b"", 2.0, "timed out after 2 s"), False, "timed out after 2 s"),
    ],
    ids=["the gateway's 403", "plain-text 403", "another code", "no error object", "401", "200", "404", "timeout"],
)
def test_evaluate_refused(response, passed, detail) -> None:
    check = verdicts.evaluate_refused("llama", MODEL, response, "batch")
    assert (check.model, check.check, check.passed, check.detail) == ("llama", "key-refused", passed, detail)


def test_a_key_the_gateway_does_not_know_fails_key_allowed_and_is_never_printed(gateway, fake_pulumi, monkeypatch, capsys):
    server = gateway()
    fake_pulumi(gateway_outputs(server))
    wrong = "sk-not-a-key-7d1e"
    monkeypatch.setenv(KEY_VARIABLE, wrong)
    code = cli.main([*VIA_GATEWAY, *FAST, "--json"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_FAILED
    assert details(json.loads(out), "qwen")["key-allowed"] == "401: the gateway does not accept this key"
    assert server.chat_requests == []
    assert wrong not in out and wrong not in err


def test_slow_answers_through_the_gateway_fail_the_same_p95_slo(gateway, fake_pulumi, monkeypatch, capsys):
    server = gateway(chat_delay=0.1)
    fake_pulumi(gateway_outputs(server))
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    code, result = run_json(capsys, *VIA_GATEWAY, *FAST, "--p95-slo", "0.05")
    assert code == cli.EXIT_FAILED
    checks = {c["check"]: c for c in result["checks"] if c["model"] == MODEL}
    assert checks["completions"]["status"] == "PASS" and checks["latency-p95"]["status"] == "FAIL"
    assert checks["latency-p95"]["data"]["p95Seconds"] >= 0.1 and checks["latency-p95"]["data"]["p95SloSeconds"] == 0.05
    assert "SLO p95 <= 0.05 s" in checks["latency-p95"]["detail"]


@pytest.mark.parametrize("value", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_a_missing_key_is_a_usage_error_that_names_the_variable(value, fake_pulumi, monkeypatch, capsys):
    calls = fake_pulumi({"endpoint": "https://llm.example.com/v1", **ONE_MODEL})
    monkeypatch.setenv("VERIFY_GATEWAY_KEY_FOR_ANOTHER_STACK", KEY)
    if value is None:
        monkeypatch.delenv(KEY_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(KEY_VARIABLE, value)
    assert cli.main(VIA_GATEWAY) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert f"--api-key-env {KEY_VARIABLE}: the environment variable {KEY_VARIABLE} is unset or empty" in err
    assert KEY not in out + err
    assert not calls.exists(), "the key is read before the stack's outputs"


def test_a_key_no_header_can_carry_is_a_usage_error_that_does_not_print_it(monkeypatch, capsys):
    monkeypatch.setenv(KEY_VARIABLE, "sk-first-line\nsk-second-line")
    assert cli.main(VIA_GATEWAY) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{KEY_VARIABLE} holds characters an HTTP header cannot carry" in err and "sk-" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--url", "http://127.0.0.1:1", "--model", MODEL, "--via-gateway", "--api-key-env", KEY_VARIABLE], "--via-gateway needs --stack"),
        (["--stack", STACK, "--via-gateway"], "--via-gateway needs --api-key-env VAR"),
        (["--stack", STACK, "--api-key-env", KEY_VARIABLE], "--api-key-env goes with --via-gateway"),
        (["--stack", STACK, "--client", "batch"], "--client goes with --via-gateway"),
        ([*VIA_GATEWAY, "--kubeconfig", "/nonexistent"], "it takes no --kubeconfig or --context"),
        ([*VIA_GATEWAY, "--context", "kind-vllm-platform"], "it takes no --kubeconfig or --context"),
    ],
    ids=["no stack", "no key variable", "key without gateway", "client without gateway", "kubeconfig", "context"],
)
def test_gateway_flags_that_do_not_go_together_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("endpoint", ["absent", None], ids=["no output", "null"])
def test_a_stack_without_a_gateway_is_a_usage_error(endpoint, fake_pulumi, monkeypatch, capsys):
    fake_pulumi(ONE_MODEL if endpoint == "absent" else {**ONE_MODEL, "endpoint": endpoint})
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    assert cli.main(VIA_GATEWAY) == cli.EXIT_USAGE
    assert "the stack has no gateway (no `endpoint` output)" in capsys.readouterr().err


def test_a_model_without_a_gateway_model_name_is_a_usage_error() -> None:
    outputs = {"endpoint": "https://llm.example.com/v1", **ONE_MODEL}
    with pytest.raises(verdicts.UsageError, match=f"`models.{MODEL}` output has no `gatewayModelName`"):
        stack.gateway_targets(outputs)
    named = {**outputs, "models": {MODEL: {**ONE_MODEL["models"][MODEL], "gatewayModelName": "llama"}}}
    assert stack.gateway_targets(named) == [verdicts.Target(MODEL, "llama", "https://llm.example.com")]
    at_zero = {**outputs, "models": {MODEL: {**named["models"][MODEL], "scalesToZero": True}}}
    assert stack.gateway_targets(at_zero) == [verdicts.Target(MODEL, "llama", "https://llm.example.com", scales_to_zero=True)]


@pytest.mark.parametrize(
    "endpoint, base_url",
    [
        ("http://k8s-gw-0a1b2c.elb.us-west-2.amazonaws.com/v1", "http://k8s-gw-0a1b2c.elb.us-west-2.amazonaws.com"),
        ("https://llm.example.com/v1", "https://llm.example.com"),
        ("https://llm.example.com/v1/", "https://llm.example.com"),
        ("https://llm.example.com:8443/llm/v1", "https://llm.example.com:8443/llm"),
    ],
)
def test_the_endpoint_is_an_openai_base_url(endpoint, base_url) -> None:
    assert stack.gateway_base_url(endpoint) == base_url


@pytest.mark.parametrize("endpoint", ["llm.example.com/v1", "https://llm.example.com", "ftp://llm.example.com/v1", "http://llm:99999/v1", "https://llm example.com/v1", 7])
def test_an_endpoint_that_is_no_openai_base_url_is_a_usage_error(endpoint) -> None:
    with pytest.raises(verdicts.UsageError, match="is not an OpenAI base URL"):
        stack.gateway_base_url(endpoint)


def gateway_target(server: GatewayDouble, gateway_model: str = MODEL) -> verdicts.Target:
    return verdicts.Target(MODEL, gateway_model, server.url)


def test_wait_ready_waits_for_the_gateway_to_route_the_model(gateway, capsys):
    server = gateway(unready=2)
    options = verdicts.Options(requests=2, concurrency=2, timeout=2, wait_ready=5, wait_interval=0.01)
    checks = probe.verify_via_gateway(gateway_target(server), options, KEY)
    assert [(c.check, c.passed) for c in checks] == [(name, True) for name in GATEWAY_CHECKS]
    assert server.unready == 0
    assert "still not ready" not in capsys.readouterr().err


@pytest.mark.parametrize("scales_to_zero", [True, False], ids=["at zero: woken", "not at zero: no wait"])
def test_a_model_at_zero_is_woken_through_the_gateway_without_wait_ready(gateway, capsys, scales_to_zero):
    server = gateway(unready=2)
    target = verdicts.Target(MODEL, MODEL, server.url, scales_to_zero=scales_to_zero)
    options = verdicts.Options(requests=2, timeout=2, wait_interval=0.01)
    checks = {c.check: c for c in probe.verify_via_gateway(target, options, KEY)}
    assert checks["key-allowed"].passed is scales_to_zero
    assert (f"waiting up to {probe.WAKE_SECONDS:g} s" in capsys.readouterr().err) is scales_to_zero
    if not scales_to_zero:
        assert checks["key-allowed"].detail.startswith("HTTP 503") and server.unready == 1


def test_wait_ready_stops_at_a_403_that_waiting_will_not_change(gateway):
    server = gateway(keys={KEY: (MODEL,)})
    options = verdicts.Options(requests=2, timeout=2, wait_ready=60, wait_interval=0.01)
    checks = {c.check: c for c in probe.verify_via_gateway(gateway_target(server, OTHER), options, KEY)}
    assert checks["key-allowed"].detail == f"403: this key may not use {OTHER}{PASS_THE_CLIENT}"
    assert server.refused[(403, OTHER)] == 2, "one poll of the wait, then the key-allowed check"


def test_the_runs_deadline_skips_the_gateway_checks(gateway):
    server = gateway()
    options = verdicts.Options(deadline=time.monotonic() - 1)
    assert [(c.check, c.passed) for c in probe.verify_via_gateway(gateway_target(server), options, KEY)] == [("deadline", False)]
    assert server.paths == []


@pytest.mark.parametrize(
    "response, passed, detail",
    [
        (client.Response(401, b'{"error": {}}', 0.01), True, "refused with 401 without a key: POST /x, GET /y"),
        (client.Response(403, b"", 0.01), False, "GET /y: HTTP 403 without a key; the gateway must refuse it with 401"),
        (client.Response(None, b"", 2.0, "connection refused"), False, "GET /y: connection refused"),
    ],
)
def test_evaluate_keyless(response, passed, detail) -> None:
    refused = client.Response(401, b'{"error": {}}', 0.01)
    check = verdicts.evaluate_keyless(MODEL, {"POST /x": refused, "GET /y": response})
    assert (check.check, check.passed, check.detail) == ("key-required", passed, detail)


@pytest.mark.parametrize(
    "response, passed, detail",
    [
        (client.Response(200, b'{"choices": [{"message": {"content": "OK"}}]}', 0.01), True, f"this key may use {MODEL}"),
        (client.Response(403, b'{"error": {}}', 0.01), False, f"403: this key may not use {MODEL}{PASS_THE_CLIENT}"),
        (client.Response(401, b'{"error": {}}', 0.01), False, "401: the gateway does not accept this key"),
        (client.Response(404, b"", 0.01), False, "HTTP 404"),
        (client.Response(None, b"", 2.0, "timed out after 2 s"), False, "timed out after 2 s"),
    ],
)
def test_evaluate_keyed(response, passed, detail) -> None:
    check = verdicts.evaluate_keyed("llama", MODEL, response)
    assert (check.model, check.check, check.passed, check.detail) == ("llama", "key-allowed", passed, detail)


def test_the_client_sends_a_key_only_where_one_is_given(gateway) -> None:
    server = gateway()
    keyless = client.HttpClient(server.url, 2)
    keyed = client.HttpClient(server.url, 2, api_key=KEY)
    try:
        assert keyless.request("/v1/models").status == 401
        assert keyed.request("/v1/models").status == 200
    finally:
        keyless.close()
        keyed.close()
    assert server.authorizations == [None, f"Bearer {KEY}"]


class EchoingGateway(GatewayDouble):
    """A gateway that quotes the Authorization header it got back, in a 500's body or as its status line."""

    def __init__(self, echo: str = "body", **variant: Any):
        super().__init__(**variant)
        self.RequestHandlerClass = _EchoingHandler
        self.echo = echo


class _EchoingHandler(_GatewayHandler):
    server: EchoingGateway

    def _refused(self, model: Optional[str]) -> bool:
        header = self.headers.get("Authorization")
        if header is None:
            return super()._refused(model)
        with self.server.lock:
            self.server.authorizations.append(header)
        if self.server.echo == "status":
            self.wfile.write(f"HTTP/1.1 {header} x\r\n\r\n".encode())
            self.close_connection = True
            return True
        # Padded so that the key straddles where a printed body is cut short: no part of it may be left.
        body = f"{'x' * 88} bad header: {header}".encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return True


@pytest.mark.parametrize("echo, shown", [("body", "HTTP 500: "), ("status", "BadStatusLine: ")])
@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
def test_a_key_the_gateway_echoes_back_is_never_printed(echo, shown, json_flag, fake_pulumi, monkeypatch, capsys):
    starting = serving(EchoingGateway)
    server = next(starting)(echo=echo)
    try:
        fake_pulumi(gateway_outputs(server))
        monkeypatch.setenv(KEY_VARIABLE, KEY)
        code = cli.main([*VIA_GATEWAY, *FAST, "--wait-ready", "0", *json_flag])
        out, err = capsys.readouterr()
    finally:
        next(starting, None)
    assert code == cli.EXIT_FAILED
    assert f"Bearer {KEY}" in server.authorizations, "the key was sent"
    assert shown in out
    for part in (KEY, KEY[:6], KEY[-6:]):
        assert part not in out and part not in err
    assert "[redacted]" in out
    # The redaction ends with the run: a later text holding the same characters is printed as it is.
    assert client.printable(KEY) == KEY


def test_the_redactor_replaces_every_concealed_secret_and_forgets_them_after_the_run() -> None:
    with client.redacting():
        client.conceal("sk-a")
        client.conceal("sk-a-longer")
        assert client.redacted("Bearer sk-a-longer, then sk-a") == "Bearer [redacted], then [redacted]"
    assert client.redacted("sk-a") == "sk-a"


@pytest.mark.parametrize(
    ("unknown_status", "passed", "detail"),
    [
        (None, True, "404 model_not_found: 'vllm-platform-verify-unknown-model', which no route serves"),
        (404, False, "HTTP 404: {\"detail\": \"Not Found\"}; not the gateway's OpenAI error (code model_not_found)"),
        (200, False, "HTTP 200: the gateway answered 'vllm-platform-verify-unknown-model', which no route serves"),
    ],
    ids=["openai-404", "bare-404", "answered"],
)
def test_a_model_no_route_serves_must_get_openais_404(unknown_status, passed, detail, gateway, fake_pulumi, monkeypatch, capsys):
    server = gateway(unknown_status=unknown_status)
    fake_pulumi(gateway_outputs(server))
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    code = cli.main([*VIA_GATEWAY, *FAST, "--json"])
    result = json.loads(capsys.readouterr().out)
    (check,) = [c for c in result["checks"] if c["check"] == "unknown-model"]
    assert (check["status"] == "PASS", check["detail"]) == (passed, detail)
    assert code == (cli.EXIT_PASSED if passed else cli.EXIT_FAILED)
    assert server.refused[(403, probe.UNKNOWN_MODEL)] == 0, "the authorization rules name served models only"
