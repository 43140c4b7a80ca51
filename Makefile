# tcpreset build. `make` installs what is missing, builds the BPF objects
# with clang and the TypeScript with tsc; a second `make` does nothing.
SHELL := /bin/bash
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

PREFIX     ?= /usr/local
DESTDIR    ?=
CLANG      ?= clang
BPF_CFLAGS := -O2 -g -target bpf -Wall -Werror -Wno-unused-function -I bpf
# Debian packages the build, the tests and the lab need (command:package).
APT_CMDS   := clang:clang llvm-strip:llvm ip:iproute2 tc:iproute2 ethtool:ethtool \
              tcpdump:tcpdump bpftool:bpftool systemd-analyze:systemd tshark:tshark \
              trafgen:netsniff-ng iperf3:iperf3
DEPS_STAMP := build/.deps
BPF_OBJS   := build/tcpreset.bpf.o build/lab_vlan.bpf.o
TS_SRCS    := $(shell find src test bench -name '*.ts' 2>/dev/null)

.PHONY: build all deps test bench demo stress install clean distclean

build all: $(DEPS_STAMP) node_modules/.stamp $(BPF_OBJS) dist/.stamp

deps: $(DEPS_STAMP) node_modules/.stamp

# Installs only what is missing, so a machine that has everything is untouched.
$(DEPS_STAMP):
	@missing=""; \
	for pair in $(APT_CMDS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	[ -f /usr/include/bpf/libbpf.h ] || missing="$$missing libbpf-dev"; \
	ldconfig -p | grep -q 'libbpf\.so\.1 ' || missing="$$missing libbpf1"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@mkdir -p build && touch $@

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

build/%.bpf.o: bpf/%.bpf.c bpf/tcpreset.h | $(DEPS_STAMP)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

dist/.stamp: $(TS_SRCS) tsconfig.json node_modules/.stamp
	npx tsc -p tsconfig.json
	@touch $@

# Every test; privileged ones need root (CI is root). Prints TAP, then one
# line "N passed, N failed, N skipped" (also in build/test-summary.txt).
test: build
	@set -o pipefail; npx ava --tap $(AVA_ARGS) | node test/tap-summary.mjs build/test-summary.txt

clean:
	rm -rf dist build/*.o

distclean: clean
	rm -rf build node_modules
