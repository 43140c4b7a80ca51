# tcpreset build. `make` builds the BPF objects with clang and the
# TypeScript with tsc (after `npm ci`); a second `make` does nothing. It
# installs nothing on the system: `make deps` (as root) installs the Debian
# packages that are missing, and `make test`, `make demo`, `make bench` and
# `make stress` run it first, so they work on a fresh Debian 12 machine.
SHELL := /bin/bash
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

PREFIX     ?= /usr/local
DESTDIR    ?=
CLANG      ?= clang
# -target bpf does not search the multiarch include dir where Debian keeps asm/types.h.
BPF_CFLAGS = -O2 -g -target bpf -Wall -Werror -Wno-unused-function -I bpf \
             -idirafter /usr/include/$(shell $(CLANG) -print-multiarch 2>/dev/null)
# Debian packages the build, the tests and the lab need (command:package).
APT_CMDS   := clang:clang llvm-strip:llvm ip:iproute2 tc:iproute2 ethtool:ethtool \
              tcpdump:tcpdump bpftool:bpftool systemd-analyze:systemd tshark:tshark \
              trafgen:netsniff-ng iperf3:iperf3 sysctl:procps xdp-filter:xdp-tools \
              dh:debhelper lintian:lintian systemd-nspawn:systemd-container \
              debootstrap:debootstrap dpkg-repack:dpkg-repack groff:groff-base man:man-db \
              ping:iputils-ping
DEPS_STAMP := build/.deps
BPF_OBJS   := build/tcpreset.bpf.o build/lab_vlan.bpf.o
TS_SRCS    := $(shell find src testkit test bench -name '*.ts' 2>/dev/null)

.PHONY: build all deps lint test bench bench-split demo stress install uninstall clean distclean deb
BINDIR     := $(PREFIX)/bin
LIBDIR     := $(PREFIX)/lib/tcpreset
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
MANDIR     ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
DOCS       := build/man/tcpreset.8 build/man/tcpresetd.8 build/man/tcpreset.conf.5 build/completion/tcpreset
# The units in systemd/ name the default PREFIX; installed copies name this one
# (a unit whose ExecStart names a missing file fails with 203/EXEC).
UNIT_SED   := -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/lib/tcpreset|$(LIBDIR)|g'

build all: node_modules/.stamp $(BPF_OBJS) dist/.stamp dist/tcpreset.cjs $(DOCS)

deps: $(DEPS_STAMP) node_modules/.stamp

# Installs only what is missing, so a machine that has everything is untouched.
$(DEPS_STAMP):
	@missing=""; \
	for pair in $(APT_CMDS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	[ -f /usr/include/bpf/libbpf.h ] || missing="$$missing libbpf-dev"; \
	ldconfig -p | grep -q 'libbpf\.so\.1 ' || missing="$$missing libbpf1"; \
	ldconfig -p | grep -q 'libxdp\.so\.1 ' || missing="$$missing libxdp1"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@mkdir -p build && touch $@

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

build/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h)
	@command -v $(CLANG) >/dev/null 2>&1 || { echo "make: $(CLANG) not found: run 'make deps' (as root) to install the build tools" >&2; exit 1; }
	@mkdir -p build
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

dist/.stamp: $(TS_SRCS) tsconfig.json node_modules/.stamp
	npx tsc -p tsconfig.json
	@# tsc never deletes: drop the output of a source that was moved or removed, or ava would run a stale test
	@for f in $$(find dist/src dist/testkit dist/test dist/bench -name '*.js' 2>/dev/null); do \
	  s=$${f#dist/}; [ -f "$${s%.js}.ts" ] || rm -f "$$f" "$$f.map"; \
	done
	@touch $@

# The CLI as one CommonJS file plus V8's code cache for it (src/cli/bundle.ts);
# bin/tcpreset runs it. Its start-up time is added to every kill.
dist/tcpreset.cjs: dist/.stamp package.json
	node dist/src/cli/bundle.js

# Manual pages and bash completion, made from the sources of the help texts
# (src/cli/docgen.ts), so they say what --help says.
$(DOCS) &: dist/.stamp package.json
	node dist/src/cli/docgen.js build

# The C floor of the design for bench/idle.ts (not part of the product, so
# only `make bench` builds it).
build/floor: bench/floor/floor.c bpf/tcpreset.h | $(DEPS_STAMP)
	$(CLANG) -O2 -g -Wall -Werror -o $@ $< -lbpf

# ESLint with type information (eslint.config.mjs: rules chosen for the bugs
# they catch). make test runs it too, as test/lint.test.ts, so CI counts it.
lint: node_modules/.stamp
	npx eslint --max-warnings 0 src test testkit bench

# Every test; privileged ones need root (CI is root). Prints TAP, then one
# line "N passed, N failed, N skipped" (also in build/test-summary.txt).
test: deps build
	@set -o pipefail; npx ava --tap $(AVA_ARGS) | node test/tap-summary.mjs build/test-summary.txt

# The main job on an embedded default: a throwaway namespace lab, the real
# daemon and CLI, live sessions killed. Root needed.
demo: deps build
	node dist/testkit/demo/demo.js

# tcpreset vs tcpkill on the same lab traffic; writes bench/results/latest.json
# and regenerates BENCHMARKS.md. BENCH_ARGS=--quick for a smoke run.
bench: deps build build/floor
	@command -v tcpkill >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dsniff >/dev/null; }
	node dist/bench/run.js $(BENCH_ARGS)

# Where the first RST's time goes from idle, tcpresetd against the C floor
# (bench/split.ts, bpftrace): writes bench/results/idle-split-LABEL.md.
# SPLIT_ARGS="--label after --gap-ms 100 --count 40 --rounds 2".
bench-split: build build/floor
	@command -v bpftrace >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bpftrace >/dev/null; }
	node dist/bench/split.js $(SPLIT_ARGS)

# The stress suite at full scale (make test runs it in its short form).
stress: deps build
	@set -o pipefail; STRESS_SCALE=full npx ava --tap --timeout=30m 'dist/test/stress/**/*.stress.js' | node test/tap-summary.mjs build/stress-summary.txt

# Code, the shipped BPF object and production node_modules under
# $(PREFIX)/lib/tcpreset; the two commands linked into $(PREFIX)/bin.
install: build
	install -d $(DESTDIR)$(LIBDIR)/bin $(DESTDIR)$(LIBDIR)/build $(DESTDIR)$(BINDIR) \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)/etc/tcpreset
	rm -rf $(DESTDIR)$(LIBDIR)/dist && mkdir -p $(DESTDIR)$(LIBDIR)/dist && cp -r dist/src $(DESTDIR)$(LIBDIR)/dist/src
	install -m 0644 dist/tcpreset.cjs dist/tcpreset.cjs.cache $(DESTDIR)$(LIBDIR)/dist/
	install -m 0644 build/tcpreset.bpf.o $(DESTDIR)$(LIBDIR)/build/tcpreset.bpf.o
	install -m 0644 package.json package-lock.json $(DESTDIR)$(LIBDIR)/
	cd $(DESTDIR)$(LIBDIR) && npm ci --omit=dev --no-audit --no-fund --loglevel=error
	install -m 0755 bin/tcpreset bin/tcpresetd $(DESTDIR)$(LIBDIR)/bin/
	install -m 0644 bin/package.json $(DESTDIR)$(LIBDIR)/bin/
	ln -sf ../lib/tcpreset/bin/tcpreset $(DESTDIR)$(BINDIR)/tcpreset
	ln -sf ../lib/tcpreset/bin/tcpresetd $(DESTDIR)$(BINDIR)/tcpresetd
	for u in tcpreset.service tcpreset.socket; do \
	  sed $(UNIT_SED) systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	install -m 0644 systemd/tcpreset.sysusers $(DESTDIR)$(SYSUSERSDIR)/tcpreset.conf
	install -d $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(BASHCOMPDIR)
	install -m 0644 build/man/tcpreset.8 build/man/tcpresetd.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 build/man/tcpreset.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 build/completion/tcpreset $(DESTDIR)$(BASHCOMPDIR)/tcpreset
	[ -e $(DESTDIR)/etc/tcpreset/config.json ] || install -m 0644 systemd/config.example.json $(DESTDIR)/etc/tcpreset/config.example.json

# The Debian package, in build/deb/. What `dpkg-buildpackage -b -us -uc` does
# (debian/rules build, then binary) without its .changes/.buildinfo in ../;
# debian/rules runs `make build` and `make install PREFIX=/usr` into the
# package tree. Needs the npm registry (npm ci --omit=dev) at build time,
# never at install time.
DEB_VERSION := $(shell dpkg-parsechangelog -S Version 2>/dev/null)
DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null)
DEB         := build/deb/tcpreset_$(DEB_VERSION)_$(DEB_ARCH).deb
deb: $(DEB)
# debian/'s sources (debhelper writes its work files beside them).
DEB_SRCS    := debian/changelog debian/control debian/copyright debian/rules debian/source/format \
               $(addprefix debian/tcpreset.,postrm lintian-overrides sysusers)
$(DEB): $(DEPS_STAMP) node_modules/.stamp $(BPF_OBJS) dist/.stamp $(DEB_SRCS) $(wildcard systemd/*) bin/tcpreset bin/tcpresetd \
        package.json package-lock.json
	dpkg-checkbuilddeps
	rm -rf debian/tcpreset debian/debhelper-build-stamp build/deb && mkdir -p build/deb
	debian/rules build
	@# As dpkg-buildpackage does for debian/control's Rules-Requires-Root: no: without it
	@# dh_testroot refuses a user who is not root; dh_builddeb makes the files root's anyway.
	DEB_RULES_REQUIRES_ROOT=no debian/rules binary
	@echo "built $@"

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR)/tcpreset $(DESTDIR)$(BINDIR)/tcpresetd \
	  $(DESTDIR)$(UNITDIR)/tcpreset.service $(DESTDIR)$(UNITDIR)/tcpreset.socket $(DESTDIR)$(SYSUSERSDIR)/tcpreset.conf \
	  $(DESTDIR)$(MANDIR)/man8/tcpreset.8 $(DESTDIR)$(MANDIR)/man8/tcpresetd.8 $(DESTDIR)$(MANDIR)/man5/tcpreset.conf.5 \
	  $(DESTDIR)$(BASHCOMPDIR)/tcpreset

clean:
	rm -rf dist build/*.o

distclean: clean
	rm -rf build node_modules
