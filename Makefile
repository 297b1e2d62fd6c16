# bindonce: a plain Makefile. `make`, `make check`, `make demo`, `make bench`, `make install`.

VERSION    := 0.1
BUILD      ?= build
CC         ?= gcc
PKG_CONFIG ?= pkg-config
PYTHON     ?= /usr/bin/python3

CFLAGS     ?= -O2 -g
CFLAGS     += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
              -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
              -fno-strict-aliasing
# For bindonce's own sources; the example and test workers define what they need.
OWN_CFLAGS  = -D_GNU_SOURCE -DBINDONCE_VERSION='"$(VERSION)"'
SYSTEMD_CFLAGS = $(shell $(PKG_CONFIG) --cflags libsystemd 2>/dev/null)
SYSTEMD_LIBS   = $(shell $(PKG_CONFIG) --libs libsystemd 2>/dev/null || echo -lsystemd)
CMOCKA_LIBS    = $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null || echo -lcmocka)

# SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer, in a build dir of its own.
ifeq ($(SANITIZE),1)
BUILD      := build-asan
CFLAGS     += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS    += -fsanitize=address,undefined
export ASAN_OPTIONS  := detect_leaks=1:abort_on_error=1:halt_on_error=1:log_path=$(CURDIR)/build-asan/sanitizer
export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1:log_path=$(CURDIR)/build-asan/sanitizer
endif

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
LIBDIR     ?= $(PREFIX)/lib
SYSCONFDIR ?= /etc
DOCDIR     ?= $(PREFIX)/share/doc/bindonce
UNITDIR    ?= $(shell $(PKG_CONFIG) --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)

# Every .c in src/ but main.c: a new file needs no edit here.
SRCS       := $(sort $(filter-out src/main.c,$(wildcard src/*.c)))
MAIN       := src/main.c
OBJS       := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(wildcard tests/unit/test_*.c))

all: $(BUILD)/bindonce $(BUILD)/testworker $(BUILD)/httpd

$(BUILD)/obj/%.o: src/%.c src/*.h | $(BUILD)/obj
	$(CC) $(CFLAGS) $(OWN_CFLAGS) $(SYSTEMD_CFLAGS) -c -o $@ $<

$(BUILD)/bindonce: $(OBJS) $(BUILD)/obj/main.o
	$(CC) $(LDFLAGS) -o $@ $^ $(SYSTEMD_LIBS)

$(BUILD)/testworker: tests/worker/testworker.c | $(BUILD)/obj
	$(CC) $(CFLAGS) $(SYSTEMD_CFLAGS) $(LDFLAGS) -o $@ $< $(SYSTEMD_LIBS)

$(BUILD)/httpd: docs/examples/httpd.c | $(BUILD)/obj
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

$(BUILD)/unit/%: tests/unit/%.c $(OBJS) | $(BUILD)/unit
	$(CC) $(CFLAGS) $(OWN_CFLAGS) $(SYSTEMD_CFLAGS) -Isrc $(LDFLAGS) -o $@ $< $(OBJS) $(SYSTEMD_LIBS) $(CMOCKA_LIBS)

# The slot's actions without processes: what would start or signal one is a stub of the test's.
$(BUILD)/unit/test_slot_dispatch: LDFLAGS += -Wl,--wrap=worker_start,--wrap=worker_terminate,--wrap=fdbudget_check_spawn

$(BUILD)/obj $(BUILD)/unit:
	mkdir -p $@

# Debian packages the build and the tests need; run as root on a machine that lacks them.
DEPS := gcc make pkg-config libsystemd-dev libcmocka-dev python3 python3-pytest procps iproute2 util-linux curl mandoc
# What `make check` runs besides bindonce, so that a fresh machine skips nothing: the real
# servers of tests/integration/test_real_servers.py (docs/WORKERS.md's recipes), the tools
# of test_packaging.py, systemd's own tools, and what boots the real-systemd container.
TEST_DEPS := gunicorn uwsgi-core uwsgi-plugin-python3 lighttpd python3-twisted nodejs golang-go \
	systemd knot-resolver bash-completion build-essential dpkg-dev debhelper fakeroot lintian \
	debootstrap systemd-container
check: DEPS += $(TEST_DEPS)
# Installing must not start the servers as services (lighttpd would take port 80, kresd
# port 53): a policy-rc.d that says no, for the time of the install, unless one is there.
deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing:" $$missing; \
			policy=; [ -e /usr/sbin/policy-rc.d ] || { policy=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; }; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
			rc=$$?; [ -z "$$policy" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; \
		elif [ -n "$$BINDONCE_ALLOW_SKIPS" ]; then \
			echo "Missing Debian packages (their tests are skipped): $$missing"; \
		else \
			echo "Missing Debian packages: $$missing (run 'sudo make deps', or BINDONCE_ALLOW_SKIPS=1 to skip their tests)"; exit 1; \
		fi; \
	fi

check: deps
	$(MAKE) all unit-tests
	$(MAKE) unit
	$(MAKE) lint-man
	$(MAKE) integration
	$(MAKE) systemd-check

# Real systemd in a booted Debian 12 container (root; skipped with the reason otherwise).
# -rs shows every skip; skipcheck fails the run on a skip not in
# tests/integration/expected-skips.txt (BINDONCE_ALLOW_SKIPS=1: a developer's run without root).
# The suite installs the Debian package with dpkg -i in the container: the one
# BINDONCE_DEB names (.ci/run: what its `make deb` built), or one it builds with
# `make deb` in a directory of its own. With SANITIZE=1 it builds the sanitizer build
# instead and installs it with `make install` (its reports in the container fail the
# run). Either way it runs make itself, so MAKEFLAGS must not reach it.
systemd-check:
	env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS BINDONCE_SANITIZE=$(SANITIZE) PYTHONPATH=tests/integration \
		$(PYTHON) -m pytest -q -rs -p skipcheck -p no:cacheprovider tests/systemd $(PYTEST_ARGS)

unit-tests: $(UNIT_TESTS)

unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

integration: all
	@rm -f $(BUILD)/sanitizer*
	BINDONCE=$(CURDIR)/$(BUILD)/bindonce TESTWORKER=$(CURDIR)/$(BUILD)/testworker \
	EXAMPLE_HTTPD=$(CURDIR)/$(BUILD)/httpd SANITIZER_LOG_DIR=$(CURDIR)/$(BUILD) PYTHONPATH=tests/integration \
		$(PYTHON) -m pytest -q -rs -p skipcheck -p no:cacheprovider tests/integration $(PYTEST_ARGS)
	@# A report is a file with text in it: a process SIGKILLed (as tests do) just as the
	@# sanitizer opened its log at exit leaves an empty one, with nothing to report.
	@if [ -n "$$(find $(BUILD) -maxdepth 1 -name 'sanitizer*' -size +0c)" ]; then \
		echo "Sanitizer reports:"; cat $(BUILD)/sanitizer*; exit 1; fi

demo: deps
	$(MAKE) $(BUILD)/bindonce $(BUILD)/httpd
	docs/examples/demo.sh $(BUILD)/bindonce $(BUILD)/httpd

# Benchmarks: medians and ratios, written to docs/PERFORMANCE.md, and the pictures beside
# it (docs/*.svg, drawn with matplotlib) from the same run; never a pass/fail test. The
# contenders are deps: a comparison missing one is not drawn, and bench.py exits 1.
bench: DEPS += python3-matplotlib supervisor gunicorn wrk systemd
bench: deps all
	BINDONCE=$(CURDIR)/$(BUILD)/bindonce TESTWORKER=$(CURDIR)/$(BUILD)/testworker \
	EXAMPLE_HTTPD=$(CURDIR)/$(BUILD)/httpd $(PYTHON) tests/bench/bench.py $(BENCH_ARGS)
	@echo "== upgrade in place and the --watch loop (docs/PERFORMANCE-upgrade-watch.md)"
	@{ echo "# Upgrade in place and the development loop"; echo; \
	   echo "Written by \`make bench\` ($$(date -u +%Y-%m-%d), $$(nproc) cores, load $$(cut -d' ' -f1 /proc/loadavg))."; \
	   echo "Medians, never pass/fail; the commands are the scripts' own docstrings."; echo; \
	   echo '```'; \
	   BINDONCE=$(CURDIR)/$(BUILD)/bindonce TESTWORKER=$(CURDIR)/$(BUILD)/testworker \
		$(PYTHON) tests/bench/upgrade_bench.py -n 20 --rounds 3; \
	   echo '```'; echo; \
	   BINDONCE=$(CURDIR)/$(BUILD)/bindonce EXAMPLE_HTTPD=$(CURDIR)/$(BUILD)/httpd \
		$(PYTHON) tests/bench/watch_bench.py -n 10; } > docs/PERFORMANCE-upgrade-watch.md.tmp
	@mv docs/PERFORMANCE-upgrade-watch.md.tmp docs/PERFORMANCE-upgrade-watch.md

# The units name /usr/local paths; other prefixes are written into the installed copies.
UNITS      := $(wildcard units/*.service units/*.socket)
# The soak of TESTING.md (scenario 12): a measurement, 30 minutes unless SOAK_MINUTES says.
soak: all
	BINDONCE=$(CURDIR)/$(BUILD)/bindonce TESTWORKER=$(CURDIR)/$(BUILD)/testworker \
	$(PYTHON) tests/bench/soak.py $(if $(SOAK_MINUTES),--minutes $(SOAK_MINUTES))

# bash-completion loads completions/bindonce from every share/ of XDG_DATA_DIRS, which
# holds /usr/local/share and /usr/share by default.
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
install: $(BUILD)/bindonce $(BUILD)/httpd
	install -D -m 0755 $(BUILD)/bindonce $(DESTDIR)$(BINDIR)/bindonce
	install -D -m 0755 $(BUILD)/httpd $(DESTDIR)$(LIBDIR)/bindonce/example-httpd
	install -D -m 0644 docs/bindonce.1 $(DESTDIR)$(MANDIR)/man1/bindonce.1
	install -D -m 0644 completion/bindonce.bash $(DESTDIR)$(BASHCOMPDIR)/bindonce
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)/examples
	for u in $(UNITS); do \
		sed -e 's|/usr/local/bin/bindonce|$(BINDIR)/bindonce|g' \
		    -e 's|/usr/local/lib/bindonce|$(LIBDIR)/bindonce|g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u); \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u); \
	done
	install -m 0644 README.md docs/GUIDE.md $(DESTDIR)$(DOCDIR)/
	# The example worker's source beside the instance configuration that runs it, whose
	# BINDONCE_COMMAND names the worker where this install puts it.
	install -m 0644 docs/examples/httpd.c $(DESTDIR)$(DOCDIR)/examples/
	sed -e 's|/usr/local/lib/bindonce|$(LIBDIR)/bindonce|g' units/bindonce-instance.conf.example \
		> $(DESTDIR)$(DOCDIR)/examples/bindonce-instance.conf.example
	chmod 0644 $(DESTDIR)$(DOCDIR)/examples/bindonce-instance.conf.example
	# The instance `bindonce@example` runs; an operator's own copy is never overwritten.
	test -e $(DESTDIR)$(SYSCONFDIR)/bindonce/example.conf || \
		install -D -m 0644 $(DESTDIR)$(DOCDIR)/examples/bindonce-instance.conf.example \
			$(DESTDIR)$(SYSCONFDIR)/bindonce/example.conf

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/bindonce $(DESTDIR)$(MANDIR)/man1/bindonce.1
	rm -f $(DESTDIR)$(BASHCOMPDIR)/bindonce
	rm -f $(DESTDIR)$(LIBDIR)/bindonce/example-httpd
	-rmdir $(DESTDIR)$(LIBDIR)/bindonce 2>/dev/null
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$(basename $$u); done
	rm -rf $(DESTDIR)$(DOCDIR)

# The Debian package (debian/, debhelper): build/deb/bindonce_$(VERSION)_$(DEB_ARCH).deb.
# dpkg-buildpackage writes beside the source directory, so it builds a copy of this tree
# (without build outputs or .git) in $(DEB_DIR), and the results land there too.
DEB_DIR  ?= $(CURDIR)/build/deb
DEB_ARCH  = $(shell dpkg --print-architecture 2>/dev/null)
deb: DEPS += dpkg-dev debhelper
deb: deps
	@v=$$(dpkg-parsechangelog -l debian/changelog -S Version); test "$$v" = "$(VERSION)" || \
		{ echo "debian/changelog is at $$v but the Makefile's VERSION is $(VERSION): add an entry (dch -v $(VERSION))"; exit 1; }
	rm -rf $(DEB_DIR)/bindonce-$(VERSION) $(DEB_DIR)/bindonce_$(VERSION)_* $(DEB_DIR)/bindonce-dbgsym_$(VERSION)_*
	mkdir -p $(DEB_DIR)/bindonce-$(VERSION)
	tar -c --exclude=./build --exclude=./build-asan --exclude=./.git --exclude=./.cache \
		--exclude=__pycache__ --exclude=./debian/bindonce --exclude=./debian/.debhelper . | \
		tar -x -C $(DEB_DIR)/bindonce-$(VERSION)
	cd $(DEB_DIR)/bindonce-$(VERSION) && env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS dpkg-buildpackage -us -uc -b
	rm -rf $(DEB_DIR)/bindonce-$(VERSION)
	@echo "Built $(DEB_DIR)/bindonce_$(VERSION)_$(DEB_ARCH).deb"

# The man page, linted as CI does.
lint-man:
	mandoc -T lint -W warning docs/bindonce.1
	MANWIDTH=80 man --warnings -l docs/bindonce.1 >/dev/null

clean:
	rm -rf build build-asan

.PHONY: all deps check unit-tests unit integration demo bench soak install uninstall deb lint-man systemd-check clean

# ---- Fuzzing (issue 9): libFuzzer harnesses in tests/fuzz, built with clang, ASan and UBSan,
# in a build dir of their own. `make fuzz` runs each for FUZZ_SECONDS; a crash, a leak or a
# failed assertion fails it (the input is kept as build-fuzz/TARGET-crash-*). New inputs
# found go to build-fuzz/corpus/TARGET; the seeds in tests/fuzz/corpus/TARGET are read only.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_BUILD   := build-fuzz
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CFLAGS  := -g -O1 -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_OBJS    := $(SRCS:src/%.c=$(FUZZ_BUILD)/obj/%.o)
# Kept between runs (make would delete them as intermediate files of a pattern chain).
.SECONDARY: $(FUZZ_OBJS)

$(FUZZ_BUILD)/obj/%.o: src/%.c src/*.h | $(FUZZ_BUILD)/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(OWN_CFLAGS) $(SYSTEMD_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(OWN_CFLAGS) $(SYSTEMD_CFLAGS) -Isrc -o $@ $< $(FUZZ_OBJS) $(SYSTEMD_LIBS)

$(FUZZ_BUILD)/obj:
	mkdir -p $@

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)

# -close_fd_mask=2: the code under test logs to stderr; libFuzzer and the sanitizers keep
# their reports on a stderr of their own.
fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t; \
		echo "== $$t ($(FUZZ_SECONDS) s)"; \
		rc=0; ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(FUZZ_BUILD)/$$t -max_total_time=$(FUZZ_SECONDS) -close_fd_mask=2 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_BUILD)/$$t- $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t \
			> $(FUZZ_BUILD)/$$t.log 2>&1 || rc=$$?; \
		grep -E '^stat::(number_of_executed_units|new_units_added)' $(FUZZ_BUILD)/$$t.log || true; \
		if [ $$rc -ne 0 ] || ls $(FUZZ_BUILD)/$$t-* >/dev/null 2>&1; then \
			tail -40 $(FUZZ_BUILD)/$$t.log; echo "$$t: FAILED (exit $$rc), see $(FUZZ_BUILD)/$$t.log"; exit 1; \
		fi; \
	done

clean-fuzz:
	rm -rf $(FUZZ_BUILD)
clean: clean-fuzz

.PHONY: fuzz fuzz-build clean-fuzz
