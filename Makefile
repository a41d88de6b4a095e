# GOTOOLCHAIN=local: build with the Go on this machine, never download one.
export GOTOOLCHAIN := local
GO ?= go
STATICCHECK_VERSION ?= v0.8.2

.PHONY: build test lint bench bench-proxy

# The binary names its commit (vmesh version, /v1/agent/self, /server_info,
# vmesh_build_info). go build stamps it from .git when it can; -X sets it
# for every build made here, worktrees and exports with REVISION=... included.
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
VERSION_LDFLAGS := $(if $(REVISION),-X github.com/vmesh/vmesh/mesh/cli.Revision=$(REVISION))

build:
	$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o vmesh .

# The one test command (README and .ci/run run exactly this).
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m -parallel 6 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt wants to rewrite:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# Benchmarks are not tests: they print numbers, they assert nothing.
bench:
	bash bench/run.sh
bench-proxy:
	bash bench/proxy.sh
