# Foundry - build, test, install.  `make help` lists the targets.
PREFIX  ?= /usr/local
BUILD   ?= build
CC      ?= cc
PKG     ?= pkg-config

PKGS      := lua5.4 libuv openssl sqlite3
LUALIBDIR := $(dir $(firstword $(wildcard /usr/lib/*/liblua5.4-luv.a /usr/lib/liblua5.4-luv.a)))
LUASTATIC := $(LUALIBDIR)liblua5.4-luv.a $(LUALIBDIR)liblua5.4-lpeg.a $(LUALIBDIR)liblua5.4-cjson.a
RE_LUA    ?= /usr/share/lua/5.4/re.lua

OPT     ?= -O2
ASAN_SUITES ?= c lua
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wno-missing-field-initializers -Wno-format-truncation -D_GNU_SOURCE \
           -fPIC -Iruntime -Iproxy -I$(BUILD) $(shell $(PKG) --cflags $(PKGS) libgit2 lua5.4-luv 2>/dev/null)
LDLIBS  += $(LUASTATIC) $(shell $(PKG) --libs $(PKGS) 2>/dev/null) -lhttp_parser -lm -lpthread -ldl

# Plugins: native modules whose libraries are heavy to load (libgit2 and its dozen
# dependencies, libedit) are shared objects the host dlopens on first `require`, so
# `foundry` starts as fast as the commands that need none of them. runtime/NAME.c and
# runtime/NAME_*.c form plugin NAME. See docs/architecture.md "Plugins".
PLUGINS      := git readline
PLUGIN_LIBS_git      := $(shell $(PKG) --libs libgit2 2>/dev/null)
PLUGIN_LIBS_readline := -ledit
PLUGIN_SRC   := $(foreach p,$(PLUGINS),$(wildcard runtime/$(p).c runtime/$(p)_*.c))
PLUGIN_SO    := $(foreach p,$(PLUGINS),$(if $(wildcard runtime/$(p).c),$(BUILD)/lib/foundry/$(p).so))

ALL_SRC  := $(filter-out runtime/main.c,$(wildcard runtime/*.c)) $(wildcard proxy/*.c)
RT_SRC   := $(filter-out $(PLUGIN_SRC),$(ALL_SRC))
RT_OBJ   := $(patsubst %.c,$(BUILD)/obj/%.o,$(RT_SRC)) $(BUILD)/obj/embedded.o $(BUILD)/obj/modules.o
PLUGIN_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(PLUGIN_SRC))
LUA_SRC  := $(shell find lua presets policies -name '*.lua' 2>/dev/null | sort)
CTESTS   := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/test_*.c))
SHIM_SRC := $(wildcard shim/*.c)

.SECONDARY: $(PLUGIN_OBJ)
.PHONY: all deps test test-c test-lua test-integration asan valgrind bench install clean help lint image
all: $(BUILD)/foundry $(PLUGIN_SO) $(if $(SHIM_SRC),$(BUILD)/foundry-shim)

help:
	@echo "make            build $(BUILD)/foundry (and $(BUILD)/foundry-shim)"
	@echo "make deps       install build and test dependencies (Debian/Ubuntu, root)"
	@echo "make test       C unit tests, Lua specs, integration suites"
	@echo "make asan       build with ASan+UBSan into build-asan/ and run the tests"
	@echo "make valgrind   run the C tests and Lua specs under valgrind"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make install    install into PREFIX (default /usr/local)"
	@echo "make image      start dockerd if needed and build the local image foundry-test:base"
	@echo "make lint       luacheck the Lua"

deps:
	@bash tools/deps.sh

$(BUILD)/obj/%.o: %.c $(wildcard runtime/*.h proxy/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/embed: tools/embed.c
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -O1 -Wall -Wextra -Werror $(shell $(PKG) --cflags lua5.4) $< -o $@ $(shell $(PKG) --libs lua5.4)

$(BUILD)/embedded.c: $(BUILD)/embed $(LUA_SRC) $(RE_LUA)
	$(BUILD)/embed $@ $(LUA_SRC) re=$(RE_LUA)

$(BUILD)/modules.c: $(ALL_SRC) tools/modules.sh
	@mkdir -p $(BUILD)
	PLUGINS="$(PLUGINS)" sh tools/modules.sh $(ALL_SRC) > $@

$(BUILD)/obj/embedded.o: $(BUILD)/embedded.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-overlength-strings -c $< -o $@

$(BUILD)/obj/modules.o: $(BUILD)/modules.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The host exports its fdr_* functions (tools/exports.list) for the plugins.
$(BUILD)/foundry: $(BUILD)/obj/runtime/main.o $(RT_OBJ) tools/exports.list
	$(CC) $(CFLAGS) $(filter %.o,$^) -o $@ -Wl,--dynamic-list=tools/exports.list $(LDFLAGS) $(LDLIBS)

$(BUILD)/lib/foundry/%.so: $(PLUGIN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared $(filter $(BUILD)/obj/runtime/$*.o $(BUILD)/obj/runtime/$*_%.o,$(PLUGIN_OBJ)) \
	    -o $@ $(LDFLAGS) $(PLUGIN_LIBS_$*)

# The shim runs as PID 1 inside images we do not control: static, libc only.
$(BUILD)/foundry-shim: $(SHIM_SRC)
	$(CC) -std=c11 -Os -Wall -Wextra -Werror -D_GNU_SOURCE -static $^ -o $@

$(BUILD)/tests/%: tests/c/%.c $(RT_OBJ) $(PLUGIN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(LDLIBS) $(foreach p,$(PLUGINS),$(PLUGIN_LIBS_$(p)))

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

# A small local image (no registry needed): Debian via debootstrap, imported.
image: all
	@bash tests/lib/dockerd.sh
	@bash tests/image/build.sh

lint:
	luacheck --no-color -q lua presets policies tests/spec tests/integration

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/libexec/foundry $(DESTDIR)$(PREFIX)/lib/foundry
	install -m 0755 $(BUILD)/foundry $(DESTDIR)$(PREFIX)/bin/foundry
	install -m 0644 $(PLUGIN_SO) $(DESTDIR)$(PREFIX)/lib/foundry/
	install -d $(DESTDIR)$(PREFIX)/share/foundry/images
	cp -R presets/images/. $(DESTDIR)$(PREFIX)/share/foundry/images/
	$(if $(SHIM_SRC),install -m 0755 $(BUILD)/foundry-shim $(DESTDIR)$(PREFIX)/libexec/foundry/foundry-shim)

clean:
	rm -rf build build-asan
