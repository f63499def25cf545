"""The GitHub workflows: valid against GitHub's published schema (offline), and doing what the
platform promises: tests and scan on every pull request, a policy-checked preview of each stack on
the pull request, and dev -> staging -> prod on main with OIDC credentials only."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import objects_of, rendered_stack, resources_of
from tools import policy_pack, render
from tools.verify import cli as verify_cli

WORKFLOWS = render.PROJECT_ROOT / ".github" / "workflows"
ENVIRONMENTS = ["dev", "staging", "prod"]
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w.-]+@(v\d+(\.\d+)*|[0-9a-f]{40})$")


@lru_cache(maxsize=None)
def workflow(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the bare key `on` as True.
    document["on"] = document.pop(True)
    return document


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("steps", [])


def step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    (step,) = [s for s in steps(job) if s.get("uses", "").startswith(f"{action}@")]
    return step


def mentions(value: Any, text: str) -> bool:
    return text in yaml.safe_dump(value)


PULUMI_TOKEN = "PULUMI_ACCESS_TOKEN"


def verify_step(job: dict[str, Any]) -> dict[str, Any]:
    (step,) = [s for s in steps(job) if "make verify" in s.get("run", "") and "if" not in s]
    return step


def diagnosis_step(job: dict[str, Any]) -> dict[str, Any]:
    (step,) = [s for s in steps(job) if "make verify" in s.get("run", "") and "failure()" in s.get("if", "")]
    return step


GATEWAY_CLIENT, GATEWAY_KEY = "GATEWAY_VERIFY_CLIENT", "GATEWAY_VERIFY_API_KEY"


def gateway_verify_step(job: dict[str, Any]) -> dict[str, Any]:
    (step,) = [s for s in steps(job) if "--via-gateway" in s.get("run", "")]
    return step


def test_workflows_match_githubs_schema() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 3
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", *files],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  test:\n    steps: [{run: make test}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, "a job without runs-on must not validate"


def test_pull_requests_run_the_tests_and_the_scan() -> None:
    pr = workflow("pull-request.yml")
    assert "pull_request" in pr["on"]
    runs = [s.get("run", "") for s in steps(pr["jobs"]["test"])]
    assert "make test" in runs, "make test ends with make scan"
    assert "scan:" in (render.PROJECT_ROOT / "Makefile").read_text()
    assert "$(MAKE) --no-print-directory scan" in (render.PROJECT_ROOT / "Makefile").read_text()


def test_a_pull_request_shows_what_it_changes_in_every_stacks_render() -> None:
    """The charts' objects included: a chart bump's diff is on the run, not only on a reviewer's machine."""
    test = workflow("pull-request.yml")["jobs"]["test"]
    (diff,) = [s for s in steps(test) if s.get("name") == "Diff the renders against the base commit"]
    assert diff["env"]["BASE"] == "${{ github.event.pull_request.base.sha }}"
    assert f"for stack in {' '.join(ENVIRONMENTS)}" in diff["run"] and "diff -ruN base head > render.diff" in diff["run"]
    upload = step_using(test, "actions/upload-artifact")
    assert upload["with"]["path"].endswith("render/render.diff")
    assert steps(test).index(diff) < steps(test).index(upload)


def test_pull_requests_preview_every_environment_with_the_policy_pack() -> None:
    preview = workflow("pull-request.yml")["jobs"]["preview"]
    assert preview["needs"] == "test"
    assert preview["strategy"]["matrix"]["stack"] == ENVIRONMENTS
    assert all(render.stack_file(s).is_file() for s in ENVIRONMENTS)
    pulumi = step_using(preview, "pulumi/actions")["with"]
    assert pulumi["command"] == "preview" and pulumi["diff"] is True
    assert pulumi["comment-on-pr"] is True and pulumi["policyPacks"].endswith("policies")
    assert preview["permissions"]["pull-requests"] == "write"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_a_pull_request_is_previewed_with_the_base_commits_policy_pack() -> None:
    """A pull request that weakens policies/ must not pass its own preview by it."""
    preview = workflow("pull-request.yml")["jobs"]["preview"]
    checkouts = [s for s in steps(preview) if s.get("uses", "").startswith("actions/checkout@")]
    head, base = checkouts
    assert "ref" not in head.get("with", {}), "the pull request's program is what is previewed"
    assert base["with"]["ref"] == "${{ github.event.pull_request.base.sha }}"
    where, sparse = base["with"]["path"], base["with"]["sparse-checkout"].split()
    assert step_using(preview, "pulumi/actions")["with"]["policyPacks"] == f"{where}/policies"
    # Everything of this project the pack imports must be in the base checkout too.
    imported = set().union(*(imported_modules(policy_pack.POLICY_DIR / name) for name in policy_pack.PACK_FILES if name.endswith(".py")))
    local = {name.replace(".", "/") for name in imported if (render.PROJECT_ROOT / name.partition(".")[0]).is_dir()}
    assert local and "policies" in sparse
    assert all(any(f"{path}/".startswith(f"{entry}/") for entry in sparse) for path in local), (local, sparse)
    (install,) = [s for s in steps(preview) if s.get("run") == f"make -C {where} policies-install"]
    at = steps(preview).index
    # The pull request's checkout cleans the workspace, so the base pack comes after it.
    assert at(head) < at(base) < at(install) < at(step_using(preview, "pulumi/actions"))
    assert "policies-install:" in (render.PROJECT_ROOT / "Makefile").read_text()


def test_a_failed_preview_says_so_on_the_pull_request() -> None:
    """pulumi/actions comments only on success; a preview stopped by a mandatory policy must not fail silently."""
    preview = workflow("pull-request.yml")["jobs"]["preview"]
    pulumi = step_using(preview, "pulumi/actions")
    (comment,) = [s for s in steps(preview) if s.get("if") == "failure()"]
    assert steps(preview).index(comment) > steps(preview).index(pulumi)
    assert comment["run"].startswith("gh pr comment") and comment["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert comment["env"]["STACK"] == "${{ matrix.stack }}" and "$STACK" in comment["run"]
    assert "actions/runs/${{ github.run_id }}" in comment["env"]["RUN_URL"] and "$RUN_URL" in comment["run"]
    assert "${{" not in comment["run"], "values reach the script through env, never spliced into it"
    assert preview["permissions"]["pull-requests"] == "write"


def test_only_the_pulumi_steps_get_the_pulumi_token() -> None:
    """The test job runs the pull request's code; it must never see the token."""
    pr = workflow("pull-request.yml")
    assert not mentions(pr.get("env", {}), PULUMI_TOKEN)
    assert not mentions(pr["jobs"]["test"], PULUMI_TOKEN)
    (up,) = workflow("pulumi-up.yml")["jobs"].values()
    for name, job in [("pull-request.yml", pr["jobs"]["preview"]), ("pulumi-up.yml", up)]:
        assert not mentions(job.get("env", {}), PULUMI_TOKEN), name
        holders = [s for s in steps(job) if mentions(s, PULUMI_TOKEN)]
        # verify reads the stack's outputs with the Pulumi CLI, after the deploy, in the same job.
        verify_steps = [verify_step(job), gateway_verify_step(job), diagnosis_step(job)] if job is up else []
        pulumi_steps = [step_using(job, "pulumi/actions"), *verify_steps]
        assert holders == pulumi_steps, name
        assert all(h["env"][PULUMI_TOKEN] == "${{ secrets.PULUMI_ACCESS_TOKEN }}" for h in holders)
        assert "environment" in job, "the secret can come from the job's environment"


def test_deploy_passes_its_secrets_to_the_called_workflow() -> None:
    """A caller's `env` never reaches a called workflow; only `secrets` does."""
    deploy = workflow("deploy.yml")
    assert "env" not in deploy
    assert all(job["secrets"] == "inherit" for job in deploy["jobs"].values())


def test_main_deploys_dev_then_staging_then_prod_behind_environments() -> None:
    deploy = workflow("deploy.yml")
    assert deploy["on"]["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    assert [jobs[e]["with"]["stack"] for e in ENVIRONMENTS] == ENVIRONMENTS
    assert "needs" not in jobs["dev"] and jobs["staging"]["needs"] == "dev" and jobs["prod"]["needs"] == "staging"
    assert deploy["concurrency"]["cancel-in-progress"] is False, "an up is never cancelled halfway"
    (up,) = workflow("pulumi-up.yml")["jobs"].values()
    assert up["environment"] == "${{ inputs.stack }}", "staging and prod wait for their environment's reviewers"
    pulumi = step_using(up, "pulumi/actions")["with"]
    assert pulumi["command"] == "up" and pulumi["policyPacks"] == "policies"


def test_callers_grant_what_the_called_workflow_asks_for() -> None:
    """GitHub refuses to start a called job that asks for more than its caller allows."""
    (up,) = workflow("pulumi-up.yml")["jobs"].values()
    for name, job in workflow("deploy.yml")["jobs"].items():
        granted = {**workflow("deploy.yml").get("permissions", {}), **job.get("permissions", {})}
        for scope, level in up["permissions"].items():
            assert granted.get(scope) == level, (name, scope)


@pytest.mark.parametrize("name, job", [("pull-request.yml", "preview"), ("pulumi-up.yml", "up")])
def test_aws_credentials_come_from_oidc_role_assumption(name: str, job: str) -> None:
    spec = workflow(name)["jobs"][job]
    assert spec["permissions"]["id-token"] == "write"
    credentials = step_using(spec, "aws-actions/configure-aws-credentials")["with"]
    assert credentials["role-to-assume"].startswith("${{ vars.")
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(credentials)


def test_no_long_lived_keys_and_every_action_pinned() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert not re.search(r"AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|aws-access-key-id", text), path.name
        for job in workflow(path.name)["jobs"].values():
            for step in steps(job):
                if "uses" in step:
                    assert PINNED_ACTION.match(step["uses"]), step["uses"]


def test_a_deploy_outlasts_the_longest_model_rollout() -> None:
    """`pulumi up` waits up to each model's staging wait's timeoutSeconds (the Staging resource's, past its Job's
    deadline), then for the Rollouts resource, up to each model's own rollout timeout; the job and the AWS session
    must outlast both."""
    (up,) = workflow("pulumi-up.yml")["jobs"].values()
    session = int(step_using(up, "aws-actions/configure-aws-credentials")["with"]["role-duration-seconds"])
    job = up["timeout-minutes"] * 60

    def longest_wait(stack: str) -> int:
        rendering = rendered_stack(stack)
        staging = {w.inputs["model"]: int(w.inputs["timeoutSeconds"]) for w in resources_of(rendering, "pulumi-python:dynamic/vllm-platform:Staging")}
        assert len(staging) == len(objects_of(rendering, "Job")), "a wait for each staging Job"
        (rollouts,) = resources_of(rendering, "pulumi-python:dynamic/vllm-platform:Rollouts")
        watched = rollouts.inputs["models"]
        assert set(watched) == {m.name for m in rendering.plan.models}
        return max(staging.get(name, 0) + model["timeoutSeconds"] for name, model in watched.items())

    longest = max(longest_wait(stack) for stack in ENVIRONMENTS)
    # An hour on top: a first up creates the cluster and its node groups before any model.
    assert longest + 3600 <= min(session, job), (longest, session, job)


def test_each_deploy_is_verified_and_a_failed_verify_fails_the_job() -> None:
    (up,) = workflow("pulumi-up.yml")["jobs"].values()
    order = steps(up)
    deploy, verify = step_using(up, "pulumi/actions"), verify_step(up)
    assert order.index(verify) == order.index(deploy) + 1, "verify runs right after pulumi up"
    assert deploy["with"]["command"] == "up"
    assert f"STACK={deploy['with']['stack-name']}" in verify["run"], "the stack just deployed"
    assert "continue-on-error" not in verify and "||" not in verify["run"] and "if" not in verify


def test_pull_requests_and_ci_test_the_dependency_floors_too() -> None:
    test = workflow("pull-request.yml")["jobs"]["test"]
    runs = [s.get("run", "") for s in steps(test)]
    assert runs.index("make test-lowest") > runs.index("make test")
    assert "make test-lowest" in (render.PROJECT_ROOT / ".ci" / "run").read_text()


def test_a_failed_deploy_is_diagnosed_by_verify_and_stays_failed() -> None:
    (up,) = workflow("pulumi-up.yml")["jobs"].values()
    diagnosis = diagnosis_step(up)
    assert step_using(up, "pulumi/actions")["id"] == "up"
    assert diagnosis["if"] == "failure() && steps.up.outcome == 'failure'"
    assert diagnosis["run"].endswith("|| true"), "its own exit code must not hide the deploy's failure, nor add one"


def test_a_stack_with_a_gateway_is_verified_through_it_with_the_ci_clients_key() -> None:
    """Only where the environment names the CI client: a stack without a gateway sets no such variable."""
    (up,) = workflow("pulumi-up.yml")["jobs"].values()
    order, gateway = steps(up), gateway_verify_step(up)
    assert order.index(gateway) == order.index(verify_step(up)) + 1, "after the direct checks pass"
    assert gateway["if"] == f"vars.{GATEWAY_CLIENT} != ''"
    assert gateway["env"][GATEWAY_KEY] == f"${{{{ secrets.{GATEWAY_KEY} }}}}"
    assert gateway["env"][GATEWAY_CLIENT] == f"${{{{ vars.{GATEWAY_CLIENT} }}}}"
    assert "continue-on-error" not in gateway and "||" not in gateway["run"]
    assert f"STACK={step_using(up, 'pulumi/actions')['with']['stack-name']}" in gateway["run"], "the stack just deployed"
    # The key reaches verify by its variable's name, never on a command line.
    assert "secrets." not in gateway["run"]
    (verify_args,) = re.findall(r'VERIFY_ARGS="([^"]*)"', gateway["run"])
    argv = ["--stack", "acme/dev", *shlex.split(verify_args.replace(f"${GATEWAY_CLIENT}", "ci"))]
    args = verify_cli.parser().parse_args(argv)
    assert verify_cli.flag_problem(args) is None
    assert (args.via_gateway, args.api_key_env, args.client) == (True, GATEWAY_KEY, "ci")
    recipe = (render.PROJECT_ROOT / "Makefile").read_text().split("\nverify:", 1)[1].split("\n\n", 1)[0]
    assert "$(VERIFY_ARGS)" in recipe, "make verify passes the gateway's flags on"


def test_only_the_gateway_verify_step_gets_the_gateway_key() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for job in workflow(path.name)["jobs"].values():
            assert not mentions(job.get("env", {}), GATEWAY_KEY), path.name
            holders = [s for s in steps(job) if mentions(s, f"secrets.{GATEWAY_KEY}")]
            assert holders == ([gateway_verify_step(job)] if path.name == "pulumi-up.yml" else []), path.name
