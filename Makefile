# Image URL to use all building/pushing image targets
IMG ?= controller:latest
# YEAR replaces the YEAR placeholder of the boilerplate header in generated code. Fixed, not
# the current year: regenerating next year must not change committed files (CI fails on that).
YEAR ?= 2026

# The one command that builds the manager; the Dockerfile runs the same.
GO_BUILD_MANAGER = CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/manager ./cmd

# Get the currently used golang install path (in GOPATH/bin, unless GOBIN is set)
ifeq (,$(shell go env GOBIN))
GOBIN=$(shell go env GOPATH)/bin
else
GOBIN=$(shell go env GOBIN)
endif

# CONTAINER_TOOL defines the container tool to be used for building images.
# Be aware that the target commands are only tested with Docker which is
# scaffolded by default. However, you might want to replace it to use other
# tools. (i.e. podman)
CONTAINER_TOOL ?= docker

# Setting SHELL to bash allows bash commands to be executed by recipes.
# Options are set to exit when a recipe line exits non-zero or a piped command fails.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

# The help target prints out all targets with their descriptions organized
# beneath their categories. The categories are represented by '##@' and the
# target descriptions by '##'. The awk command is responsible for reading the
# entire set of makefiles included in this invocation, looking for lines of the
# file as xyz: ## something, and then pretty-format the target and help. Then,
# if there's a line with ##@ something, that gets pretty-printed as a category.
# More info on the usage of ANSI control characters for terminal formatting:
# https://en.wikipedia.org/wiki/ANSI_escape_code#SGR_parameters
# More info on the awk command:
# http://linuxcommand.org/lc3_adv_awk.php

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate WebhookConfiguration, ClusterRole and CustomResourceDefinition objects.
	"$(CONTROLLER_GEN)" rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: controller-gen ## Generate code containing DeepCopy, DeepCopyInto, and DeepCopyObject method implementations.
	"$(CONTROLLER_GEN)" object:headerFile="hack/boilerplate.go.txt",year=$(YEAR) paths="./..."

.PHONY: fmt
fmt: ## Run go fmt against code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet against code.
	go vet ./...

.PHONY: verify-generated
verify-generated: manifests generate helm-sync fmt ## Regenerate; in CI (CI=true) also go mod tidy, and fail when that changed any file (hack/verify-generated.sh).
	hack/verify-generated.sh

# Per test binary. test/install builds the static manager from a cold cache, which on 2
# busy cores takes longer than go test's default 10 minutes.
TEST_TIMEOUT ?= 30m

.PHONY: test
test: manifests generate helm-sync fmt verify-generated vet lint-api envtest-assets ## Run vet and the API linter, unit and envtest suites with the race detector, then a short fuzz run; in CI, first fail on stale generated files.
	KUBEBUILDER_ASSETS="$$(hack/controlplane.sh)" go test -race -count=1 -timeout $(TEST_TIMEOUT) $(GO_TEST_FLAGS) ./...
	@$(MAKE) --no-print-directory fuzz FUZZ_TIME=$(FUZZ_TIME_SHORT)

# Fuzz targets as package:Target; each runs for FUZZ_TIME.
FUZZ_TARGETS = ./internal/filter:FuzzFilter ./internal/sink:FuzzCloudEvent ./internal/sink:FuzzJSONString ./internal/payload:FuzzShapes
FUZZ_TIME ?= 2m
# make test fuzzes for a number of executions, not a duration: a duration races Go 1.26's
# fuzz coordinator at the deadline and can fail with "context deadline exceeded" without
# any finding (go.dev/issue/75804, fixed in Go 1.27).
FUZZ_TIME_SHORT ?= 10000x

.PHONY: fuzz
fuzz: ## Fuzz spec handling, CloudEvent building, JSON string encoding and payload shaping (FUZZ_TIME each, default 2m).
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($$pkg, $(FUZZ_TIME))"; \
		go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZ_TIME) $$pkg || exit 1; \
	done

.PHONY: envtest-assets
envtest-assets: ## Build etcd and kube-apiserver from Go modules into the per-user cache (once).
	@hack/controlplane.sh >/dev/null

.PHONY: demo
demo: manifests envtest-assets ## Run the operator against a local control plane with a sample subscription.
	KUBEBUILDER_ASSETS="$$(hack/controlplane.sh)" go run ./hack/demo

.PHONY: bench
bench: manifests envtest-assets ## End-to-end benchmarks against baselines (table in bin/bench/results.md, raw JSON in bin/bench/results.json), then the Go micro-benchmarks.
	@mkdir -p bin/bench
	KUBEBUILDER_ASSETS="$$(hack/controlplane.sh)" go run ./test/bench -out bin/bench/results.json -md bin/bench/results.md $(BENCH_FLAGS)
	KUBEBUILDER_ASSETS="$$(hack/controlplane.sh)" go test -run '^$$' -bench . -benchmem $(GO_BENCH_FLAGS) $(GO_BENCH_PKGS) > bin/bench/gobench.txt; \
		status=$$?; cat bin/bench/gobench.txt; exit $$status

.PHONY: bench-profile
bench-profile: manifests envtest-assets ## The scenarios behind missed targets with CPU and heap profiles, and a pprof summary of each CPU profile (bin/bench/profiles).
	@rm -rf bin/bench/profiles && mkdir -p bin/bench/profiles
	KUBEBUILDER_ASSETS="$$(hack/controlplane.sh)" go run ./test/bench -only $(PROFILE_SCENARIOS) -profile bin/bench/profiles \
		-out bin/bench/profiles/results.json -md bin/bench/profiles/results.md $(BENCH_FLAGS)
	@for f in bin/bench/profiles/*.cpu.pb.gz; do \
		go tool pprof -top -cum -nodecount=60 "$$f" > "$${f%.pb.gz}.top.txt" 2>/dev/null || exit 1; \
		echo "$${f%.pb.gz}.top.txt"; done

PROFILE_SCENARIOS ?= latency,drain,convergence

# BENCH_FLAGS go to test/bench: -quick for a smoke run, -memory-objects 10000,100000 for the
# large memory figure, -only latency,... for single scenarios (go run ./test/bench -h).
BENCH_FLAGS ?=
GO_BENCH_FLAGS ?= -count=1
GO_BENCH_PKGS ?= ./internal/watch ./internal/delivery ./internal/event ./internal/sink ./internal/payload ./internal/filter

.PHONY: lint
lint: golangci-lint ## Run golangci-lint linter
	"$(GOLANGCI_LINT)" run

.PHONY: lint-fix
lint-fix: golangci-lint ## Run golangci-lint linter and perform fixes
	"$(GOLANGCI_LINT)" run --fix

.PHONY: lint-config
lint-config: golangci-lint ## Verify golangci-lint linter configuration
	"$(GOLANGCI_LINT)" config verify

.PHONY: lint-api
lint-api: kube-api-linter ## Check the API types in api/ against the Kubernetes API conventions (kube-api-linter, .golangci-kal.yml).
	"$(KUBE_API_LINTER)" run -c .golangci-kal.yml ./api/...

##@ Build

.PHONY: build
build: manifests generate fmt vet manager ## Generate, check and build the manager binary.

.PHONY: manager
manager: ## Compile bin/manager only (what the Dockerfile runs).
	$(GO_BUILD_MANAGER)

.PHONY: plugin
plugin: ## Compile bin/kubectl-notifier, the kubectl plugin: put it on the PATH and run `kubectl notifier`.
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/kubectl-notifier ./cmd/kubectl-notifier

# The archives plugins/krew/notifier.yaml points at: one per platform, each with the binary
# alone, and their sha256 to put in the manifest.
PLUGIN_PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64
.PHONY: plugin-dist
plugin-dist: ## Build the krew archives of kubectl-notifier into dist/ and print their sha256.
	@set -e; mkdir -p dist; for p in $(PLUGIN_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		dir=$$(mktemp -d); \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags="-s -w" -o $$dir/kubectl-notifier$$ext ./cmd/kubectl-notifier; \
		tar -czf dist/kubectl-notifier_$${os}_$${arch}.tar.gz -C $$dir .; rm -rf $$dir; \
	done; cd dist && sha256sum kubectl-notifier_*.tar.gz

.PHONY: run
run: manifests generate fmt vet ## Run a controller from your host.
	go run ./cmd

# If you wish to build the manager image targeting other platforms you can use the --platform flag.
# (i.e. docker build --platform linux/arm64). However, you must enable docker buildKit for it.
# More info: https://docs.docker.com/develop/develop-images/build_enhancements/
# Override BASE_IMAGE to build from another registry, e.g.
# make docker-build IMG=<img> BASE_IMAGE=docker.io/library/golang:1.26
.PHONY: docker-build
docker-build: ## Build docker image with the manager.
	$(CONTAINER_TOOL) build $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) -t ${IMG} .

.PHONY: docker-push
docker-push: ## Push docker image with the manager.
	$(CONTAINER_TOOL) push ${IMG}

# PLATFORMS defines the target platforms for the manager image be built to provide support to multiple
# architectures. (i.e. make docker-buildx IMG=myregistry/mypoperator:0.0.1). To use this option you need to:
# - be able to use docker buildx. More info: https://docs.docker.com/build/buildx/
# - have enabled BuildKit. More info: https://docs.docker.com/develop/develop-images/build_enhancements/
# - be able to push the image to your registry (i.e. if you do not set a valid value via IMG=<myregistry/image:<tag>> then the export will fail)
# To adequately provide solutions that are compatible with multiple platforms, you should consider using this option.
PLATFORMS ?= linux/arm64,linux/amd64,linux/s390x,linux/ppc64le
.PHONY: docker-buildx
docker-buildx: ## Build and push docker image for the manager for cross-platform support
	# copy existing Dockerfile and insert --platform=${BUILDPLATFORM} into Dockerfile.cross, and preserve the original Dockerfile
	sed -e '1 s/\(^FROM\)/FROM --platform=\$$\{BUILDPLATFORM\}/; t' -e ' 1,// s//FROM --platform=\$$\{BUILDPLATFORM\}/' Dockerfile > Dockerfile.cross
	- $(CONTAINER_TOOL) buildx create --name dynamic-notifier-builder
	$(CONTAINER_TOOL) buildx use dynamic-notifier-builder
	- $(CONTAINER_TOOL) buildx build --push --platform=$(PLATFORMS) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) --tag ${IMG} -f Dockerfile.cross .
	- $(CONTAINER_TOOL) buildx rm dynamic-notifier-builder
	rm Dockerfile.cross

.PHONY: build-installer
build-installer: manifests generate kustomize helm-sync ## Generate a consolidated YAML with CRDs and deployment (dist/install.yaml).
	mkdir -p dist
	cd config/manager && "$(KUSTOMIZE)" edit set image controller=${IMG}
	"$(KUSTOMIZE)" build config/default > dist/install.yaml

##@ Helm chart

CHART ?= charts/dynamic-notifier

.PHONY: helm-sync
helm-sync: manifests ## Copy the generated CRDs and RBAC (ClusterRole and namespaced Roles), the admission policy, the ServiceMonitor, alerting rules and Grafana dashboard into the Helm chart (test/install fails when they differ).
	rm -f $(CHART)/files/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART)/files/crds/
	cp config/rbac/role.yaml $(CHART)/files/rbac/role.yaml
	mkdir -p $(CHART)/files/admission $(CHART)/files/prometheus $(CHART)/files/grafana
	cp config/admission/policy.yaml config/admission/binding.yaml $(CHART)/files/admission/
	cp config/prometheus/monitor.yaml config/prometheus/alerts.yaml $(CHART)/files/prometheus/
	cp config/grafana/dashboard.json $(CHART)/files/grafana/

.PHONY: helm-lint
helm-lint: helm ## Lint the Helm chart with its default values.
	"$(HELM)" lint $(CHART)

.PHONY: helm-package
helm-package: helm-sync helm ## Package the Helm chart into dist/.
	mkdir -p dist
	"$(HELM)" package $(CHART) --destination dist

##@ Deployment

ifndef ignore-not-found
  ignore-not-found = false
endif

.PHONY: install
install: manifests kustomize ## Install CRDs into the K8s cluster specified in ~/.kube/config.
	@out="$$( "$(KUSTOMIZE)" build config/crd 2>/dev/null || true )"; \
	if [ -n "$$out" ]; then echo "$$out" | "$(KUBECTL)" apply -f -; else echo "No CRDs to install; skipping."; fi

.PHONY: uninstall
uninstall: manifests kustomize ## Uninstall CRDs from the K8s cluster specified in ~/.kube/config. Call with ignore-not-found=true to ignore resource not found errors during deletion.
	@out="$$( "$(KUSTOMIZE)" build config/crd 2>/dev/null || true )"; \
	if [ -n "$$out" ]; then echo "$$out" | "$(KUBECTL)" delete --ignore-not-found=$(ignore-not-found) -f -; else echo "No CRDs to delete; skipping."; fi

.PHONY: deploy
deploy: manifests kustomize ## Deploy controller to the K8s cluster specified in ~/.kube/config.
	cd config/manager && "$(KUSTOMIZE)" edit set image controller=${IMG}
	"$(KUSTOMIZE)" build config/default | "$(KUBECTL)" apply -f -

.PHONY: undeploy
undeploy: kustomize ## Undeploy controller from the K8s cluster specified in ~/.kube/config. Call with ignore-not-found=true to ignore resource not found errors during deletion.
	"$(KUSTOMIZE)" build config/default | "$(KUBECTL)" delete --ignore-not-found=$(ignore-not-found) -f -

##@ Dependencies

## Location to install dependencies to
LOCALBIN ?= $(shell pwd)/bin
$(LOCALBIN):
	mkdir -p "$(LOCALBIN)"

## Tool Binaries
KUBECTL ?= kubectl
KUSTOMIZE ?= $(LOCALBIN)/kustomize
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
GOLANGCI_LINT = $(LOCALBIN)/golangci-lint
KUBE_API_LINTER = $(LOCALBIN)/golangci-lint-kube-api-linter
HELM ?= $(LOCALBIN)/helm

## Tool Versions
KUSTOMIZE_VERSION ?= v5.8.1
CONTROLLER_TOOLS_VERSION ?= v0.23.0

# The envtest control plane, built from these releases by hack/controlplane.sh.
export K8S_VERSION ?= 1.37.2
export ETCD_VERSION ?= 3.6.16

GOLANGCI_LINT_VERSION ?= v2.15.0
# kube-api-linter has no releases: a pseudo-version. It is built into a golangci-lint of
# GOLANGCI_LINT_VERSION (about 4 minutes of CPU, once).
KUBE_API_LINTER_VERSION ?= v0.0.0-20260716143926-092fe0c72997
# Built from source through the Go module proxy (about 3 minutes, once).
HELM_VERSION ?= v3.22.0
.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Download kustomize locally if necessary.
$(KUSTOMIZE): $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Download controller-gen locally if necessary.
$(CONTROLLER_GEN): $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT) ## Download golangci-lint locally if necessary.
$(GOLANGCI_LINT): $(LOCALBIN)
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

# kube-api-linter's golangci-lint (its cmd/golangci-lint-kube-api-linter) built in a throwaway
# module that pins both versions, so it runs the golangci-lint of GOLANGCI_LINT_VERSION rather
# than the older one kube-api-linter's go.mod names; `go install pkg@version` could not.
.PHONY: kube-api-linter
kube-api-linter: $(KUBE_API_LINTER) ## Build golangci-lint with kube-api-linter locally if necessary.
$(KUBE_API_LINTER): $(LOCALBIN)
	@v="$(KUBE_API_LINTER_VERSION)-golangci-lint-$(GOLANGCI_LINT_VERSION)"; \
	[ -f "$(KUBE_API_LINTER)-$$v" ] && [ "$$(readlink -- "$(KUBE_API_LINTER)" 2>/dev/null)" = "$(KUBE_API_LINTER)-$$v" ] || { \
	set -e; \
	echo "Building golangci-lint $(GOLANGCI_LINT_VERSION) with sigs.k8s.io/kube-api-linter@$(KUBE_API_LINTER_VERSION)"; \
	tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	cd "$$tmp"; export GOWORK=off; \
	go mod init kube-api-linter-build >/dev/null 2>&1; \
	go get sigs.k8s.io/kube-api-linter/cmd/golangci-lint-kube-api-linter@$(KUBE_API_LINTER_VERSION) \
		github.com/golangci/golangci-lint/v2@$(GOLANGCI_LINT_VERSION); \
	go build -trimpath -o "$(KUBE_API_LINTER)-$$v" sigs.k8s.io/kube-api-linter/cmd/golangci-lint-kube-api-linter; \
	} ;\
	ln -sf "$$(realpath "$(KUBE_API_LINTER)-$$v")" "$(KUBE_API_LINTER)"

.PHONY: helm
helm: $(HELM) ## Build helm locally if necessary.
$(HELM): $(LOCALBIN)
	$(call go-install-tool,$(HELM),helm.sh/helm/v3/cmd/helm,$(HELM_VERSION))

# go-install-tool will 'go install' any package with custom target and name of binary, if it doesn't exist
# $1 - target path with name of binary
# $2 - package url which can be installed
# $3 - specific version of package
define go-install-tool
@[ -f "$(1)-$(3)" ] && [ "$$(readlink -- "$(1)" 2>/dev/null)" = "$(1)-$(3)" ] || { \
set -e; \
package=$(2)@$(3) ;\
echo "Downloading $${package}" ;\
rm -f "$(1)" ;\
GOBIN="$(LOCALBIN)" go install $${package} ;\
mv "$(LOCALBIN)/$$(basename "$(1)")" "$(1)-$(3)" ;\
} ;\
ln -sf "$$(realpath "$(1)-$(3)")" "$(1)"
endef

define gomodver
$(shell go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' $(1) 2>/dev/null)
endef
