# sandboxd build.  `make` builds build/sandboxd, build/sandbox and build/sandbox-agent.
CC ?= cc
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wshadow -Isrc -D_GNU_SOURCE \
          -fstack-protector-strong -D_FORTIFY_SOURCE=2 -MMD -MP
SAN ?=
ifneq ($(SAN),)
CFLAGS += -fsanitize=$(SAN) -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SAN)
endif
# Undefined behaviour stops the program, so a sanitizer run cannot pass with a report.
ifneq ($(findstring undefined,$(SAN)),)
CFLAGS += -fno-sanitize-recover=undefined
endif
PKGS_DAEMON := libmicrohttpd jansson sqlite3 libseccomp yaml-0.1 libcurl libarchive libcrypto
PKGS_CLI := libcurl jansson libarchive
DAEMON_CFLAGS := $(shell pkg-config --cflags $(PKGS_DAEMON) 2>/dev/null)
DAEMON_LIBS := $(shell pkg-config --libs $(PKGS_DAEMON) 2>/dev/null) -lpthread -lm
CLI_CFLAGS := $(shell pkg-config --cflags $(PKGS_CLI) 2>/dev/null)
CLI_LIBS := $(shell pkg-config --libs $(PKGS_CLI) 2>/dev/null) -lpthread -lm

B := build
COMMON_SRC := $(wildcard src/common/*.c)
PROTO_SRC := $(wildcard src/proto/*.c)
DAEMON_SRC := $(COMMON_SRC) $(PROTO_SRC) $(wildcard src/api/*.c) $(wildcard src/core/*.c) \
              $(wildcard src/image/*.c) $(wildcard src/store/*.c) $(wildcard src/backend/*.c) \
              $(wildcard src/backend/ns/*.c)
AGENT_SRC := $(COMMON_SRC) $(PROTO_SRC) $(wildcard src/agent/*.c)
CLI_SRC := $(COMMON_SRC) $(wildcard src/cli/*.c)

obj = $(patsubst src/%.c,$(B)/obj/$(1)/%.o,$(2))
DAEMON_OBJ := $(call obj,daemon,$(DAEMON_SRC))
AGENT_OBJ := $(call obj,agent,$(AGENT_SRC))
CLI_OBJ := $(call obj,cli,$(CLI_SRC))

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))
# Unit tests link against the daemon's objects except its main().
LIB_OBJ := $(filter-out $(B)/obj/daemon/core/main.o,$(DAEMON_OBJ))

.PHONY: all clean test unit integration run install-deps format format-check bench bench-quick asan analyze
all: $(B)/sandboxd $(B)/sandbox $(B)/sandbox-agent

$(B)/obj/daemon/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DAEMON_CFLAGS) -c $< -o $@
$(B)/obj/agent/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSBX_AGENT -c $< -o $@
$(B)/obj/cli/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CLI_CFLAGS) -c $< -o $@

$(B)/sandboxd: $(DAEMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS)
# The agent is static: it runs inside images that may have no (or another) libc.
$(B)/sandbox-agent: $(AGENT_OBJ)
	$(CC) $(filter-out -fsanitize=%,$(LDFLAGS)) -static -o $@ $^
$(B)/sandbox: $(CLI_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(CLI_LIBS)

$(B)/tests/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DAEMON_CFLAGS) -Itests/unit -o $@ $< $(LIB_OBJ) $(DAEMON_LIBS)

# Agent objects must not be built with sanitizers (static link).
$(AGENT_OBJ): CFLAGS := $(filter-out -fsanitize=% -fno-omit-frame-pointer,$(CFLAGS))

unit: $(UNIT_BIN)
	@tests/unit/run.sh $(UNIT_BIN)

integration: all
	/usr/bin/python3 -m pytest -q tests/integration

# The whole test suite: unit tests, then integration tests against a real daemon.
test: all $(UNIT_BIN)
	@tests/run-all.sh

# Installs dependencies, builds, starts a daemon and runs a first sandbox.
run: install-deps all
	scripts/run-demo.sh

install-deps:
	scripts/install-deps.sh

# The daemon and CLI with ASan+UBSan in build-asan/ (the agent stays a plain static
# binary).  Run the integration suite on them with SANDBOXD_BUILD_DIR=build-asan.
asan:
	$(MAKE) B=build-asan SAN=address,undefined all

# clang's static analyzer over the daemon's sources.  Fails on any finding (file and
# checker) that docs/analysis.md does not explain; the HTML report is in build-analyze/report.
analyze:
	rm -rf build-analyze && mkdir -p build-analyze
	scan-build -o build-analyze/report $(MAKE) -j$$(nproc) B=build-analyze build-analyze/sandboxd \
	    >build-analyze/scan.log 2>&1 || { tail -n 40 build-analyze/scan.log; exit 1; }
	@grep -E '^src/[^ ]+: warning: .*\[[a-z]+\.[A-Za-z.]+\]$$' build-analyze/scan.log | sort -u \
	    | tee build-analyze/findings.txt
	@bad=0; for fc in $$(sed -E 's/^(src[^:]+):.*\[([^]]+)\]$$/\1@\2/' build-analyze/findings.txt | sort -u); do \
	    if ! grep -qF "$${fc%@*} $${fc#*@}" docs/analysis.md; then echo "analyze: unexplained: $$fc"; bad=1; fi; \
	done; echo "analyze: $$(wc -l <build-analyze/findings.txt) findings, each checked against docs/analysis.md"; \
	exit $$bad

include fuzz/fuzz.mk

bench: all
	bench/run.sh
bench-quick: all
	bench/run.sh --quick

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h')
format-check:
	clang-format --dry-run --Werror $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h')

clean:
	rm -rf $(B) build-asan build-fuzz build-replay build-analyze

-include $(shell find $(B) -name '*.d' 2>/dev/null)
