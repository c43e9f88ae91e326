# LLMProxy for Go. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
BUF := npx --yes @bufbuild/buf@1.75.0
BINARIES := llmproxy-controlplane llmproxy llmproxyctl mockllm

.PHONY: help build test run generate lint bench bench-deps e2e tidy-check generate-check clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/llmproxy-controlplane ./controlplane/cmd/llmproxy-controlplane
	$(GO) build -o $(BIN)/llmproxyctl ./controlplane/cmd/llmproxyctl
	$(GO) build -o $(BIN)/llmproxy ./proxy/cmd/llmproxy
	$(GO) build -o $(BIN)/mockllm ./e2e/cmd/mockllm

test: ## unit and end-to-end tests (race detector on); needs PostgreSQL and Redis
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

e2e: ## only the end-to-end tests
	$(GO) test -race -count=1 -timeout 15m ./e2e/...

run: build ## mockllm + control plane (SQLite under .data/) + one proxy on :3000
	@bash deploy/run-local.sh

generate: ## regenerate gen/ from proto/ (offline: buf from npm, plugins as go tools)
	$(BUF) generate
	@gofmt -l gen >/dev/null

lint: ## gofmt, go vet, buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags fasthttp ./proxy/cmd/llmproxy-spike-fasthttp
	$(BUF) lint

bench: build ## benchmarks: Go micro-benchmarks of the hot paths, then proxy vs nginx vs direct (bench/out/)
	@mkdir -p bench/out
	$(GO) build -tags fasthttp -o $(BIN)/llmproxy-spike-fasthttp ./proxy/cmd/llmproxy-spike-fasthttp
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 300ms ./proxy/... | tee bench/out/micro.txt
	$(GO) run ./e2e/cmd/benchharness --bin $(BIN) --out bench/out

bench-deps: ## install nginx-light, the benchmark's baseline (Debian, as root)
	command -v nginx >/dev/null || (apt-get update && apt-get install -y nginx-light)

generate-check: generate ## fail when gen/ is stale
	@git diff --exit-code -- gen || (echo "gen/ is stale: run make generate and commit"; exit 1)
	@test -z "$$(git status --porcelain -- gen)" || (echo "gen/ has untracked files: run make generate and commit"; exit 1)

tidy-check: ## fail when go mod tidy would change go.mod or go.sum
	$(GO) mod tidy
	@git diff --exit-code -- go.mod go.sum || (echo "go.mod/go.sum not tidy: run go mod tidy and commit"; exit 1)

clean: ## remove build output and local state
	rm -rf $(BIN) .data bench/out
