.POSIX:
.SUFFIXES:
.SUFFIXES: .c .o

PREFIX = /usr/local
BINDIR = $(PREFIX)/bin
MANDIR = $(PREFIX)/share/man
CC = cc
CFLAGS = -O2
WFLAGS = -std=c99 -Wall -Wextra -Wpedantic -Wshadow -Wmissing-prototypes
MUSLCC = musl-gcc
PYTHON = python3
FUZZCC = clang
FUZZFLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZTIME = 60
FUZZDIR = fuzz-out

OBJ = main.o cfg.o dag.o fan.o plug.o show.o sched.o slurm.o res.o log.o lock.o
SRC = main.c cfg.c dag.c fan.c plug.c show.c sched.c slurm.c res.c log.c lock.c

all: dagrun

dagrun: $(OBJ)
	$(CC) $(LDFLAGS) -o $@ $(OBJ)

.c.o:
	$(CC) $(CFLAGS) $(WFLAGS) -c $<

$(OBJ): dagrun.h

# the one static binary: musl, small (no unwind tables, unused sections
# dropped, code and data in one segment), stripped
STATIC = dagrun-static
STATICFLAGS = -Os -static -ffunction-sections -fdata-sections \
	-fno-asynchronous-unwind-tables -fno-unwind-tables \
	-Wl,--gc-sections -Wl,-z,noseparate-code

static: $(STATIC)

$(STATIC): $(SRC) dagrun.h
	$(MUSLCC) $(STATICFLAGS) $(WFLAGS) -o $@ $(SRC)
	$(CROSS)strip $@

# the same for ARM with a cross compiler and musl for the target (Debian:
# gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf, musl-dev:arm64,
# musl-dev:armhf); any other: make static STATIC=dagrun-X CROSS=triplet-
# MUSLCC="triplet-gcc -specs .../musl-gcc.specs"
aarch64:
	$(MAKE) static STATIC=dagrun-aarch64 CROSS=aarch64-linux-gnu- \
		MUSLCC="aarch64-linux-gnu-gcc -specs /usr/lib/aarch64-linux-musl/musl-gcc.specs"

armhf:
	$(MAKE) static STATIC=dagrun-armhf CROSS=arm-linux-gnueabihf- \
		MUSLCC="arm-linux-gnueabihf-gcc -specs /usr/lib/arm-linux-musleabihf/musl-gcc.specs"

asan: dagrun-asan

dagrun-asan: $(SRC) dagrun.h
	$(CC) -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
		-fno-sanitize-recover=all $(WFLAGS) -o $@ $(SRC)

# libFuzzer targets for the config and spawn file parsers (main.c's main
# left out); fuzz-run runs each for FUZZTIME seconds on a copy of its
# corpus in FUZZDIR, where a crashing input is left
FUZZOPT = -max_len=4096 -timeout=10 -dict=t/fuzz/dagrun.dict -print_final_stats=1

fuzz: fuzz-cfg fuzz-spawn

fuzz-cfg: $(SRC) dagrun.h t/fuzz/fuzz_cfg.c
	$(FUZZCC) $(FUZZFLAGS) -DFUZZ $(WFLAGS) -I. -o $@ $(SRC) t/fuzz/fuzz_cfg.c

fuzz-spawn: $(SRC) dagrun.h t/fuzz/fuzz_spawn.c
	$(FUZZCC) $(FUZZFLAGS) -DFUZZ $(WFLAGS) -I. -o $@ $(SRC) t/fuzz/fuzz_spawn.c

fuzz-run: fuzz-cfg fuzz-spawn
	rm -rf $(FUZZDIR)
	mkdir -p $(FUZZDIR)/cfg $(FUZZDIR)/spawn
	cp t/fuzz/corpus/cfg/* $(FUZZDIR)/cfg/
	cp t/fuzz/corpus/spawn/* $(FUZZDIR)/spawn/
	./fuzz-cfg $(FUZZOPT) -max_total_time=$(FUZZTIME) \
		-artifact_prefix=$(FUZZDIR)/cfg- $(FUZZDIR)/cfg
	./fuzz-spawn $(FUZZOPT) -max_total_time=$(FUZZTIME) \
		-artifact_prefix=$(FUZZDIR)/spawn- $(FUZZDIR)/spawn

# the whole suite against the normal build, and the manual pages
check: dagrun
	DAGRUN=$$PWD/dagrun ./t/pytest -q t
	mandoc -Tlint -W warning man/dagrun.1 man/dagrun.ini.5

check-static: dagrun-static
	DAGRUN=$$PWD/dagrun-static ./t/pytest -q t

# an ARM binary run by qemu-user through binfmt_misc (see .ci/run)
check-aarch64: aarch64
	DAGRUN=$$PWD/dagrun-aarch64 ./t/pytest -q t

check-armhf: armhf
	DAGRUN=$$PWD/dagrun-armhf ./t/pytest -q t

check-asan: dagrun-asan
	DAGRUN=$$PWD/dagrun-asan ./t/pytest -q t

# valgrind slows dagrun itself; the tests marked heavy are left to the others
check-valgrind: dagrun
	DAGRUN=$$PWD/dagrun DAGRUN_WRAP="valgrind -q --error-exitcode=99 \
		--leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite" \
		./t/pytest -q -m "not heavy" t

install: dagrun
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5
	cp dagrun $(DESTDIR)$(BINDIR)/
	cp man/dagrun.1 $(DESTDIR)$(MANDIR)/man1/
	cp man/dagrun.ini.5 $(DESTDIR)$(MANDIR)/man5/

clean:
	rm -f dagrun dagrun-static dagrun-aarch64 dagrun-armhf dagrun-asan fuzz-cfg fuzz-spawn $(OBJ)
	rm -rf fuzz-out

.PHONY: all static aarch64 armhf asan fuzz fuzz-run check check-static check-aarch64 \
	check-armhf check-asan check-valgrind install clean
