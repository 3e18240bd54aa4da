# biconnector: the front door. `make` builds the C core for Lua 5.4 into build/,
# `make luajit` for LuaJIT into build-luajit/, `make test` runs every test.
BUILD        ?= build
BUILD_LUAJIT ?= build-luajit
BUILD_ASAN   ?= build-asan
CMAKE_FLAGS  ?= -DBIC_WERROR=ON
BUSTED       ?= busted
JOBS         ?= 2

.PHONY: install env demo all luajit asan deps test-deps test test-lua54 test-luajit test-asan rock clean bench fuzz lint

all: deps
	cmake -S . -B $(BUILD) -DBIC_LUA=5.4 $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

luajit: deps
	cmake -S . -B $(BUILD_LUAJIT) -DBIC_LUA=luajit $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD_LUAJIT) -j$(JOBS)

asan: deps
	cmake -S . -B $(BUILD_ASAN) -DBIC_LUA=5.4 -DBIC_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD_ASAN) -j$(JOBS)

deps:
	@scripts/ensure-deps build

test-deps:
	@scripts/ensure-deps build test

# Every spec under Lua 5.4, then the runtime-neutral ones under LuaJIT.
test: test-deps all luajit
	scripts/run-specs lua5.4 $(BUILD)
	scripts/run-specs luajit $(BUILD_LUAJIT)

test-lua54: test-deps all
	scripts/run-specs lua5.4 $(BUILD)

test-luajit: test-deps luajit
	scripts/run-specs luajit $(BUILD_LUAJIT)

# The suite on the AddressSanitizer + UBSan build.
test-asan: test-deps asan
	BIC_SANITIZE=1 scripts/run-specs lua5.4 $(BUILD_ASAN)

# Static checks: luacheck, gcc -Wshadow -Wconversion -Werror on both runtimes, cppcheck.
lint:
	@scripts/ensure-deps build lint
	scripts/lint

# Benchmarks, run by hand (figures go into docs/); each part is bounded in time.
bench: test-deps all luajit
	@scripts/ensure-deps bench
	bench/json lua5.4 $(BUILD)
	bench/urldata lua5.4 $(BUILD)
	bench/form lua5.4 $(BUILD)
	bench/rest lua5.4 $(BUILD)
	BUILD=$(BUILD) BUILD_LUAJIT=$(BUILD_LUAJIT) bench/serve
	bench/ngx

# libFuzzer targets under ASan/UBSan, FUZZ_SECONDS each (the issues ask for 300).
FUZZ_SECONDS ?= 300
fuzz: test-deps
	fuzz/run-json.sh $(FUZZ_SECONDS)
	fuzz/run-form.sh $(FUZZ_SECONDS)

rock: deps
	luarocks make --deps-mode=none rockspec/biconnector-scm-1.rockspec

# `biconnector` on the PATH from a clone. `make install` builds and installs the
# rock (modules, core, command) into the system tree, or with PREFIX=DIR into a
# private luarocks tree; `eval "$$(make -s env)"` uses the clone itself instead.
PREFIX ?=
install: deps
	luarocks --lua-version 5.4 $(if $(PREFIX),--tree "$(PREFIX)") make --deps-mode=none rockspec/biconnector-scm-1.rockspec
	@$(if $(PREFIX),echo 'installed into $(PREFIX): eval "$$(luarocks --lua-version 5.4 --tree "$(PREFIX)" path)"; export PATH="$(PREFIX)/bin:$$PATH"',echo 'installed: biconnector --version')

env:
	@[ -f "$(abspath $(BUILD))/biconnector/core.so" ] || echo "make env: $(BUILD)/biconnector/core.so is missing: run make first" >&2
	@printf 'export PATH="%s/bin:$$PATH"\n' "$(CURDIR)"
	@printf 'export LUA_PATH="%s/lua/?.lua;%s/lua/?/init.lua;;"\n' "$(CURDIR)" "$(CURDIR)"
	@printf 'export LUA_CPATH="%s/?.so;;"\n' "$(abspath $(BUILD))"

clean:
	rm -rf $(BUILD) $(BUILD_LUAJIT) $(BUILD_ASAN) build.luarocks build-lint-5.4 build-lint-luajit

# The README's "run the main job": serve the demo connector on its sample data.
DEMO_LISTEN ?= 127.0.0.1:8080
demo: all
	bin/biconnector serve examples/demo/connector.lua --listen $(DEMO_LISTEN)
