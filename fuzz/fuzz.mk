# Fuzz targets (included by the top-level Makefile).
#
# Each fuzz/fuzz_<name>.c defines LLVMFuzzerTestOneInput and has a seed corpus in
# fuzz/corpus/<name>/.  The same source builds two ways:
#   make fuzz         libFuzzer binaries (clang, -fsanitize=fuzzer,address,undefined) in
#                     build-fuzz/fuzz/; run one with  build-fuzz/fuzz/fuzz_proto fuzz/corpus/proto
#   make fuzz-replay  plain programs (fuzz/replay.c supplies main) built with $(CC) and
#                     ASan+UBSan in build-replay/fuzz/, then run over every corpus
#   make fuzz-run     builds the libFuzzer binaries and fuzzes each for FUZZ_SECONDS
FUZZ_NAMES := request proto config oci layer
FUZZ_SECONDS ?= 20
FUZZ_BIN := $(patsubst %,$(B)/fuzz/fuzz_%,$(FUZZ_NAMES))
# The agent's sources minus its main(), built like daemon code, for the FS request decoder.
FUZZ_AGENT_OBJ := $(call obj,fuzzagent,$(filter-out src/agent/agent.c,$(wildcard src/agent/*.c)))
FUZZ_PROTO_OBJ := $(call obj,fuzzagent,$(COMMON_SRC) $(PROTO_SRC)) $(FUZZ_AGENT_OBJ)
# FUZZ_MAIN is the replay main() for plain builds; libFuzzer brings its own.
FUZZ_MAIN ?=
FUZZ_LDFLAGS ?=

.PHONY: fuzz fuzz-bins fuzz-replay fuzz-run
fuzz:
	$(MAKE) B=build-fuzz CC=clang SAN=fuzzer-no-link,address,undefined FUZZ_LDFLAGS=-fsanitize=fuzzer fuzz-bins
fuzz-replay:
	$(MAKE) B=build-replay SAN=address,undefined FUZZ_MAIN=build-replay/obj/fuzz/replay.o fuzz-bins
	@set -e; for n in $(FUZZ_NAMES); do \
	    echo "fuzz-replay: $$n"; build-replay/fuzz/fuzz_$$n fuzz/corpus/$$n; \
	done
# Fuzzes each target for FUZZ_SECONDS on a scratch copy of its corpus (the checked-in
# corpus only changes by hand).  A crash leaves its input in build-fuzz/crash-<name>-*.
fuzz-run: fuzz
	@set -e; for n in $(FUZZ_NAMES); do \
	    rm -rf build-fuzz/corpus-$$n; mkdir -p build-fuzz/corpus-$$n; \
	    echo "fuzz-run: $$n for $(FUZZ_SECONDS)s"; \
	    build-fuzz/fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	        -print_final_stats=0 -artifact_prefix=build-fuzz/crash-$$n- \
	        build-fuzz/corpus-$$n fuzz/corpus/$$n 2>build-fuzz/fuzz-$$n.log \
	        || { tail -n 60 build-fuzz/fuzz-$$n.log; exit 1; }; \
	    tail -n 1 build-fuzz/fuzz-$$n.log; \
	done

fuzz-bins: $(FUZZ_BIN)
.SECONDARY: $(patsubst %,$(B)/obj/fuzz/fuzz_%.o,$(FUZZ_NAMES))

$(B)/obj/fuzz/%.o: fuzz/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DAEMON_CFLAGS) -c $< -o $@
$(B)/obj/fuzzagent/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/fuzz/fuzz_proto: $(B)/obj/fuzz/fuzz_proto.o $(FUZZ_PROTO_OBJ) $(FUZZ_MAIN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(FUZZ_LDFLAGS) -o $@ $^
$(B)/fuzz/fuzz_%: $(B)/obj/fuzz/fuzz_%.o $(LIB_OBJ) $(FUZZ_MAIN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(FUZZ_LDFLAGS) -o $@ $^ $(DAEMON_LIBS)
