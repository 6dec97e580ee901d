# berth — build, test and generate. Only Go is needed: buf, the protoc
# plugins and staticcheck run pinned through `go run`.
BUF_VERSION := v1.75.0
BUF := go run github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
# staticcheck 2026.2.2, which supports Go 1.26.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
GO_TEST_FLAGS ?= -race -timeout 15m

# VERSION and COMMIT are stamped into the binary (berth version).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: all build install run test unit e2e faults fuzz bench generate checkgenerate lint lint-core staticcheck fmt vet clean docker

all: build

build:
	go build -ldflags "$(LDFLAGS)" -o bin/berth ./cmd/berth

## install: berth into $(go env GOBIN), or $(go env GOPATH)/bin: put that directory on PATH
install:
	go install -ldflags "$(LDFLAGS)" ./cmd/berth
	@bin=$$(go env GOBIN); [ -n "$$bin" ] || bin=$$(go env GOPATH)/bin; echo "installed $$bin/berth (put $$bin on PATH)"

## run: the all-in-one dev cluster (embedded etcd, control plane, two groups of two executors)
run: build
	./bin/berth dev

## test: every test (unit, integration on embedded etcd, e2e with real processes) and the checks
# e2e runs with -count=1: its tests build and start the berth binary, which
# go test's cache does not see, so a cached pass could hide a change.
test: vet lint checkgenerate
	go test $(GO_TEST_FLAGS) $$(go list ./... | grep -v /e2e)
	go test $(GO_TEST_FLAGS) -count=1 ./e2e/...

unit:
	go test $(GO_TEST_FLAGS) -short ./...

e2e:
	go test $(GO_TEST_FLAGS) -count=1 ./e2e/...

## docker: the container image of deploy/Dockerfile, when docker is installed
# (not part of `make test`: the files in deploy/ are checked by go test ./deploy).
IMAGE ?= berth:dev
docker:
	@if command -v docker >/dev/null 2>&1; then \
		docker build -f deploy/Dockerfile -t $(IMAGE) . ; \
	else \
		echo "make docker: docker is not installed; skipping the image build"; \
	fi

## faults: the fault suite with real processes at full scale, printing each figure (docs/reliability.md)
# Its own timeout: the storm alone (20,000 devices) may take up to about
# 15 min on a busy 2-core machine. BERTH_STORM_DEVICES=5000 make faults: a
# smaller storm.
FAULTS_TIMEOUT ?= 45m
faults:
	@mkdir -p bin; BERTH_FAULTS=full go test $(GO_TEST_FLAGS) -timeout $(FAULTS_TIMEOUT) -count=1 -v -run '^TestFault' ./e2e/... >bin/faults.log 2>&1; rc=$$?; \
	grep -E -- '--- (PASS|FAIL)|FIGURE' bin/faults.log; echo "full log: bin/faults.log"; exit $$rc

## fuzz: each fuzz target for FUZZTIME (not part of `make test`, which runs
# their committed seeds, testdata/fuzz/<Target>/, as ordinary tests). A crash
# is written to the package's testdata/fuzz/<Target>/ and fails the target.
FUZZTIME ?= 30s
FUZZ_TARGETS := \
	./policy:FuzzPolicy \
	./token:FuzzVerify \
	./token:FuzzTokenModified \
	./controlplane:FuzzAssign \
	./executor:FuzzConnectFrames \
	./executor:FuzzCheckPublish \
	./registry:FuzzCheckID

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		go test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	done

## bench: the benchmarks the README quotes
bench: build
	./bin/berth bench assign
	./bin/berth bench balance
	./bin/berth bench streams --devices 10000
	./bin/berth bench assign --tls
	./bin/berth bench streams --tls --devices 10000
	./bin/berth bench push
	./bin/berth bench rebalance
	./bin/berth bench hop

generate:
	rm -rf gen
	$(BUF) generate

## checkgenerate: fails when gen/ is not what the protos generate
checkgenerate:
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(BUF) generate -o $$tmp && \
	diff -r $$tmp/gen gen >/dev/null || { echo "gen/ is stale: run 'make generate'"; exit 1; }

## lint: buf lint, gofmt and staticcheck
lint: lint-core staticcheck

lint-core:
	$(BUF) lint
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	[ -z "$$out" ] || { echo "gofmt would change: $$out"; exit 1; }

staticcheck:
	$(STATICCHECK) ./...

vet:
	go vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
