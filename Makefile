# Foundry - build, test, install.  `make help` lists the targets.
PREFIX  ?= /usr/local
BUILD   ?= build
CC      ?= cc
PKG     ?= pkg-config

PKGS      := lua5.4 libuv openssl libgit2 sqlite3
LUALIBDIR := $(dir $(firstword $(wildcard /usr/lib/*/liblua5.4-luv.a /usr/lib/liblua5.4-luv.a)))
LUASTATIC := $(LUALIBDIR)liblua5.4-luv.a $(LUALIBDIR)liblua5.4-lpeg.a $(LUALIBDIR)liblua5.4-cjson.a
RE_LUA    ?= /usr/share/lua/5.4/re.lua

OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -D_GNU_SOURCE \
           -Iruntime -Iproxy -I$(BUILD) $(shell $(PKG) --cflags $(PKGS) lua5.4-luv 2>/dev/null)
LDLIBS  += $(LUASTATIC) $(shell $(PKG) --libs $(PKGS) 2>/dev/null) -ledit -lhttp_parser -lm -lpthread -ldl

RT_SRC   := $(filter-out runtime/main.c,$(wildcard runtime/*.c)) $(wildcard proxy/*.c)
RT_OBJ   := $(patsubst %.c,$(BUILD)/obj/%.o,$(RT_SRC)) $(BUILD)/obj/embedded.o $(BUILD)/obj/modules.o
LUA_SRC  := $(shell find lua presets policies -name '*.lua' 2>/dev/null | sort)
CTESTS   := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/test_*.c))
SHIM_SRC := $(wildcard shim/*.c)

.PHONY: all deps test test-c test-lua test-integration asan valgrind bench install clean help lint image
all: $(BUILD)/foundry $(if $(SHIM_SRC),$(BUILD)/foundry-shim)

help:
	@echo "make            build $(BUILD)/foundry (and $(BUILD)/foundry-shim)"
	@echo "make deps       install build and test dependencies (Debian/Ubuntu, root)"
	@echo "make test       C unit tests, Lua specs, integration suites"
	@echo "make asan       build with ASan+UBSan into build-asan/ and run the tests"
	@echo "make valgrind   run the C tests and Lua specs under valgrind"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make install    install into PREFIX (default /usr/local)"

deps:
	@bash tools/deps.sh

$(BUILD)/obj/%.o: %.c $(wildcard runtime/*.h proxy/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/embed: tools/embed.c
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -O1 -Wall -Wextra -Werror $< -o $@

$(BUILD)/embedded.c: $(BUILD)/embed $(LUA_SRC) $(RE_LUA)
	$(BUILD)/embed $@ $(LUA_SRC) re=$(RE_LUA)

$(BUILD)/modules.c: $(RT_SRC) tools/modules.sh
	@mkdir -p $(BUILD)
	sh tools/modules.sh $(RT_SRC) > $@

$(BUILD)/obj/embedded.o: $(BUILD)/embedded.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-overlength-strings -c $< -o $@

$(BUILD)/obj/modules.o: $(BUILD)/modules.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/foundry: $(BUILD)/obj/runtime/main.o $(RT_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(LDLIBS)

# The shim runs as PID 1 inside images we do not control: static, libc only.
$(BUILD)/foundry-shim: $(SHIM_SRC)
	$(CC) -std=c11 -Os -Wall -Wextra -Werror -D_GNU_SOURCE -static $^ -o $@

$(BUILD)/tests/%: tests/c/%.c $(RT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(LDLIBS)

test: all $(CTESTS)
	@bash tests/run.sh

test-c: $(CTESTS)
	@bash tests/run.sh c

test-lua: all
	@bash tests/run.sh lua

test-integration: all
	@bash tests/run.sh integration

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	    LDFLAGS="-fsanitize=address,undefined" all $(patsubst $(BUILD)/%,build-asan/%,$(CTESTS))
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    FOUNDRY_BUILD=build-asan bash tests/run.sh $(ASAN_SUITES)

valgrind: all $(CTESTS)
	FOUNDRY_VALGRIND=1 bash tests/run.sh c lua

bench: all
	@bash bench/run.sh

image: all
	@bash tests/image/build.sh

lint:
	luacheck --no-color -q lua presets policies tests/spec

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/libexec/foundry
	install -m 0755 $(BUILD)/foundry $(DESTDIR)$(PREFIX)/bin/foundry
	$(if $(SHIM_SRC),install -m 0755 $(BUILD)/foundry-shim $(DESTDIR)$(PREFIX)/libexec/foundry/foundry-shim)

clean:
	rm -rf build build-asan
