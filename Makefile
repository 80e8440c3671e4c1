# eTSF - make targets.  Run as root on Debian 12.  `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV   := $(CURDIR)/.venv
PY     := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)/src
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_HOST_KEY_CHECKING := False
LAB_HOSTS ?= 3
# RFC 4475 torture messages for tests/bpf/test_rfc4475.py; a relative path is taken from
# the checkout's root (the default: the project's shared/ folder beside the checkout)
ETSF_RFC4475_DIR ?= ../shared/reference/rfc4475
export ETSF_RFC4475_DIR
RFC4475_PATH = $(if $(filter /%,$(ETSF_RFC4475_DIR)),$(ETSF_RFC4475_DIR),$(CURDIR)/$(ETSF_RFC4475_DIR))

.PHONY: help setup demo test test-py check-corpus lint ansible-lint sanity molecule lab-up lab-down lab-status build collection ee bench-datapath changelog clean bench bench-paired bench-quick bench-path bench-flood bench-pingpong bench-lru bench-keepalive appliance appliance-qemu reference

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## install Debian and PyPI dependencies (idempotent)
	@scripts/setup.sh

demo: setup ## main job: boot the lab fleet and roll eTSF out to it
	@scripts/demo.sh $(LAB_HOSTS)

test: check-corpus setup ## everything CI runs: pytest (unit, bpf, integration, lab), lint, sanity, molecule
	$(MAKE) --no-print-directory test-py
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory molecule

test-py: check-corpus ## pytest suites
	$(PY) -m pytest -q -p no:cacheprovider tests

# One line and a non-zero exit, before anything is installed or run, when the corpus is missing.
check-corpus:
	@$(if $(wildcard $(RFC4475_PATH)/INDEX.tsv),:,$(error ETSF_RFC4475_DIR=$(ETSF_RFC4475_DIR): no RFC 4475 corpus there ($(RFC4475_PATH)/INDEX.tsv missing); set ETSF_RFC4475_DIR to its directory))

lint: ansible-lint sanity ## ansible-lint (production profile) and ansible-test sanity

ansible-lint:
	ansible-lint --profile production --offline

sanity: ## ansible-test sanity on a copy laid out as ansible_collections/etsf/sip
	@scripts/sanity.sh

MOLECULE_SCENARIOS ?= default fleet policy_change

# Every scenario is merged over the one base config (named here so a tree without .git works too).
molecule: ## Molecule scenarios on lab-booted hosts (default, fleet, policy_change)
	cd $(CURDIR) && for s in $(MOLECULE_SCENARIOS); do \
	  molecule -c .config/molecule/config.yml test -s $$s || exit 1; done

lab-up: setup ## boot the lab fleet (LAB_HOSTS=3)
	$(PY) -m lab up --hosts $(LAB_HOSTS)

lab-down: ## remove every lab namespace, link, mount and process
	$(PY) -m lab down

lab-status:
	$(PY) -m lab status

build: ## compile the eBPF objects for this host into build/bpf
	$(PY) -m etsf build --out $(CURDIR)/build/bpf

COLLECTION_OUT ?= $(CURDIR)/build
collection: ## build etsf-sip-<version>.tar.gz into $(COLLECTION_OUT) (default build/)
	ansible-galaxy collection build --force --output-path $(COLLECTION_OUT)

EE_CONTEXT ?= $(CURDIR)/build/ee/context
ee: ## execution environment build context (ee/execution-environment.yml) in $(EE_CONTEXT); build it with ansible-builder build
	rm -rf $(CURDIR)/build/ee/stage && mkdir -p $(CURDIR)/build/ee/stage
	ansible-galaxy collection build --force --output-path $(CURDIR)/build/ee/stage
	cp $(CURDIR)/build/ee/stage/etsf-sip-*.tar.gz $(CURDIR)/build/ee/etsf-sip.tar.gz
	ansible-builder create --file $(CURDIR)/ee/execution-environment.yml --context $(EE_CONTEXT)

bench-datapath: setup ## ns/packet microbenchmark via BPF_PROG_TEST_RUN
	$(PY) bench/datapath.py

bench: setup ## full SIP benchmark vs kube-proxy emulations (<= 40 min, quiet host): bench/results/<UTC>/
	$(PY) bench/run.py --full

bench-paired: setup ## latency only: A, C, E, D interleaved round by round, paired differences (~20 min, quiet host)
	$(PY) bench/run.py --paired

bench-path: setup ## node path benchmark: transit per packet, CPU that adds up, sweep, overload (<= 40 min, quiet host): bench/results/<UTC>-path/
	$(PY) bench/path.py --full $(if $(BENCH_PATH_BUDGET),--budget-min $(BENCH_PATH_BUDGET))

bench-flood: setup ## flood baselines: eTSF XDP vs nftables meter vs iptables hashlimit, side by side (<= 10 min): bench/results/<UTC>-flood/
	$(PY) bench/floodcmp.py --full

bench-pingpong: setup ## pinned ping-pong: what eTSF adds to one SIP round trip on the direct path, paired with D (<= 15 min): bench/results/<UTC>-pingpong/
	$(PY) bench/pingpong.py --full

bench-lru: setup ## LRU insert+lookup ns, one common list vs per-CPU lists (PROG_TEST_RUN, ~1 min): bench/results/<UTC>-lru/
	$(PY) bench/lrubench.py

bench-keepalive: setup ## keep-alives: eTSF answers OPTIONS in the kernel vs Kamailio, paired rounds + max rate (<= 19 min, quiet host): bench/results/<UTC>-keepalive/
	$(PY) bench/keepalive.py $(if $(BENCH_KEEPALIVE_BUDGET),--budget-min $(BENCH_KEEPALIVE_BUDGET))

bench-quick: setup ## SIP benchmark harness smoke run (~2.5 min, correctness only)
	$(PY) bench/run.py --quick --out $(CURDIR)/build/bench-quick

APPLIANCE_NAME ?= etsf-appliance
APPLIANCE_OUT := $(CURDIR)/build/appliance/$(APPLIANCE_NAME)
APPLIANCE_QEMU_FIRMWARE ?= both
APPLIANCE_QEMU_TIMEOUT ?= 900

appliance: setup ## Debian 12 appliance: rootfs tarball + raw GPT image (BIOS/UEFI) in build/appliance/<name>/
	@mkdir -p $(CURDIR)/build/appliance
	@: > $(CURDIR)/build/appliance/.ansible-$(APPLIANCE_NAME).log
	ANSIBLE_LOG_PATH=$(CURDIR)/build/appliance/.ansible-$(APPLIANCE_NAME).log \
	  nice -n 10 ansible-playbook -i inventory/appliance playbooks/appliance.yml -e appliance_name=$(APPLIANCE_NAME)

appliance-qemu: appliance ## boot the raw image in qemu (TCG; BIOS then UEFI) until the first-boot line (~2-3 min each)
	APPLIANCE_QEMU_SEED=$(APPLIANCE_QEMU_SEED) scripts/appliance-qemu.sh $(APPLIANCE_OUT)/$(APPLIANCE_NAME).img $(APPLIANCE_QEMU_FIRMWARE) $(APPLIANCE_QEMU_TIMEOUT)

reference: ## regenerate docs/reference/*.md from the document schemas (a unit test checks them)
	PYTHONPATH=src $(PY) -m etsf.schema_docs --write docs/reference

changelog: ## lint changelog fragments
	antsibull-changelog lint

clean:
	rm -rf build .pytest_cache tests/output
