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

SRCS       := src/activation.c src/balance.c src/control.c src/ctl.c src/notify.c src/orphans.c src/sdnotify.c src/units.c src/address.c src/backoff.c src/listener.c src/log.c src/spawn.c src/supervisor.c
# Robustness (issue 9): signals, the log buffer, rate limits, fd budget, escaping, UTF-8.
SRCS       += src/ratelimit.c src/signals.c src/fdbudget.c src/escapes.c src/utf8.c src/escape.c src/ownership.c src/closefds.c
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

$(BUILD)/obj $(BUILD)/unit:
	mkdir -p $@

# Debian packages the build and the tests need; run as root on a machine that lacks them.
DEPS := gcc make pkg-config libsystemd-dev libcmocka-dev python3 python3-pytest procps iproute2 util-linux curl mandoc
deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing:" $$missing; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else \
			echo "Missing Debian packages: $$missing (run 'sudo make deps')"; exit 1; \
		fi; \
	fi

check: deps
	$(MAKE) all unit-tests
	$(MAKE) unit
	$(MAKE) lint-man
	$(MAKE) integration
	$(MAKE) systemd-check

# Real systemd in a booted Debian 12 container (root; skipped with the reason otherwise).
# The suite builds bindonce itself, in a directory of its own (with SANITIZE=1: the
# sanitizer build, whose reports in the container fail it), so MAKEFLAGS must not reach it.
systemd-check:
	env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS BINDONCE_SANITIZE=$(SANITIZE) \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/systemd $(PYTEST_ARGS)

unit-tests: $(UNIT_TESTS)

unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

integration: all
	@rm -f $(BUILD)/sanitizer*
	BINDONCE=$(CURDIR)/$(BUILD)/bindonce TESTWORKER=$(CURDIR)/$(BUILD)/testworker \
	EXAMPLE_HTTPD=$(CURDIR)/$(BUILD)/httpd SANITIZER_LOG_DIR=$(CURDIR)/$(BUILD) \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)
	@if ls $(BUILD)/sanitizer* >/dev/null 2>&1; then echo "Sanitizer reports:"; cat $(BUILD)/sanitizer*; exit 1; fi

demo: deps
	$(MAKE) $(BUILD)/bindonce $(BUILD)/httpd
	docs/examples/demo.sh $(BUILD)/bindonce $(BUILD)/httpd

# Benchmarks: medians and ratios, written to docs/PERFORMANCE.md; never a pass/fail test.
bench: deps all
	BINDONCE=$(CURDIR)/$(BUILD)/bindonce TESTWORKER=$(CURDIR)/$(BUILD)/testworker \
	EXAMPLE_HTTPD=$(CURDIR)/$(BUILD)/httpd $(PYTHON) tests/bench/bench.py $(BENCH_ARGS)

# The units name /usr/local paths; other prefixes are written into the installed copies.
UNITS      := $(wildcard units/*.service units/*.socket)
# The soak of TESTING.md (scenario 12): a measurement, 30 minutes unless SOAK_MINUTES says.
soak: all
	BINDONCE=$(CURDIR)/$(BUILD)/bindonce TESTWORKER=$(CURDIR)/$(BUILD)/testworker \
	$(PYTHON) tests/bench/soak.py $(if $(SOAK_MINUTES),--minutes $(SOAK_MINUTES))

install: $(BUILD)/bindonce $(BUILD)/httpd
	install -D -m 0755 $(BUILD)/bindonce $(DESTDIR)$(BINDIR)/bindonce
	install -D -m 0755 $(BUILD)/httpd $(DESTDIR)$(LIBDIR)/bindonce/example-httpd
	install -D -m 0644 docs/bindonce.1 $(DESTDIR)$(MANDIR)/man1/bindonce.1
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	for u in $(UNITS); do \
		sed -e 's|/usr/local/bin/bindonce|$(BINDIR)/bindonce|g' \
		    -e 's|/usr/local/lib/bindonce|$(LIBDIR)/bindonce|g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u); \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u); \
	done
	install -m 0644 units/bindonce-instance.conf.example README.md docs/GUIDE.md $(DESTDIR)$(DOCDIR)/
	# The instance `bindonce@example` runs; an operator's own copy is never overwritten.
	test -e $(DESTDIR)$(SYSCONFDIR)/bindonce/example.conf || \
		install -D -m 0644 units/bindonce-instance.conf.example $(DESTDIR)$(SYSCONFDIR)/bindonce/example.conf

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/bindonce $(DESTDIR)$(MANDIR)/man1/bindonce.1
	rm -f $(DESTDIR)$(LIBDIR)/bindonce/example-httpd
	-rmdir $(DESTDIR)$(LIBDIR)/bindonce 2>/dev/null
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$(basename $$u); done
	rm -rf $(DESTDIR)$(DOCDIR)

# The man page, linted as CI does.
lint-man:
	mandoc -T lint -W warning docs/bindonce.1
	MANWIDTH=80 man --warnings -l docs/bindonce.1 >/dev/null

clean:
	rm -rf build build-asan

.PHONY: all deps check unit-tests unit integration demo bench soak install uninstall lint-man systemd-check clean

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
