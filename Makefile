# Everything runs from the project's own virtualenv, the one Pulumi.yaml names.
VENV ?= venv
PYTHON := $(VENV)/bin/python
STACK ?= dev
OUT ?= build/$(STACK)

.PHONY: test render preview up verify install clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

test: install
	$(PYTHON) -m pytest -n 2 -q

render: install
	$(PYTHON) -m tools.render --stack $(STACK) --out $(OUT)

preview: install
	pulumi preview --stack $(STACK) --diff

up: install
	pulumi up --stack $(STACK)

# After `pulumi up`: pods, probes' endpoints and chat latency of every model in the stack.
verify: install
	$(PYTHON) -m tools.verify --stack $(STACK) $(VERIFY_ARGS)

clean:
	rm -rf build .pytest_cache
