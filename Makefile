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
PKGS_DAEMON := libmicrohttpd jansson sqlite3 libseccomp yaml-0.1 libcurl libarchive libcrypto
PKGS_CLI := libcurl jansson
DAEMON_CFLAGS := $(shell pkg-config --cflags $(PKGS_DAEMON) 2>/dev/null)
DAEMON_LIBS := $(shell pkg-config --libs $(PKGS_DAEMON) 2>/dev/null) -lpthread -lm
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

.PHONY: all clean test unit integration run install-deps format format-check bench bench-quick
all: $(B)/sandboxd $(B)/sandbox $(B)/sandbox-agent

$(B)/obj/daemon/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DAEMON_CFLAGS) -c $< -o $@
$(B)/obj/agent/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSBX_AGENT -c $< -o $@
$(B)/obj/cli/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

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

bench: all
	bench/run.sh
bench-quick: all
	bench/run.sh --quick

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h')
format-check:
	clang-format --dry-run --Werror $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h')

clean:
	rm -rf $(B)

-include $(shell find $(B) -name '*.d' 2>/dev/null)
