# Needs only python3 (3.11+) and pip: uv and the virtual environment are bootstrapped here.
PYTHON ?= python3
BOOT := .venv-boot
UV := $(BOOT)/bin/uv
VENV := .venv
RUN := $(UV) run --frozen --all-packages

.PHONY: demo test lint typecheck generate check-generated messages serve clean

$(UV):
	$(PYTHON) -m venv $(BOOT)
	$(BOOT)/bin/pip install --quiet --disable-pip-version-check uv

$(VENV)/.synced: $(UV) pyproject.toml uv.lock plugins/*/pyproject.toml
	$(UV) sync --frozen --all-packages --all-groups --compile-bytecode
	touch $@

demo: $(VENV)/.synced  ## the hub's main job on embedded defaults
	$(RUN) cxhub demo --auto --stay

serve: $(VENV)/.synced
	$(RUN) cxhub serve --config hub/demo.toml

test: $(VENV)/.synced  ## the whole test suite
	$(RUN) pytest -q

lint: $(VENV)/.synced
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: $(VENV)/.synced
	$(RUN) mypy

generate: $(VENV)/.synced  ## schemas/, docs/hooks.md and config/cxhub.example.toml from the code
	$(RUN) cxhub generate

check-generated: $(VENV)/.synced
	$(RUN) cxhub generate --check

messages: $(VENV)/.synced  ## the cockpit's texts: extract hub/locale/cockpit.pot, update every cockpit.po
	$(RUN) pybabel extract -F hub/locale/cockpit.cfg -k _ --no-default-keywords \
		--omit-header --no-location --sort-output --no-wrap -o hub/locale/cockpit.pot hub
	$(RUN) pybabel update -i hub/locale/cockpit.pot -d hub/locale -D cockpit \
		--ignore-obsolete --ignore-pot-creation-date --no-wrap

clean:
	rm -rf $(BOOT) $(VENV)
