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

OBJ = main.o cfg.o dag.o sched.o res.o log.o lock.o
SRC = main.c cfg.c dag.c sched.c res.c log.c lock.c

all: dagrun

dagrun: $(OBJ)
	$(CC) $(LDFLAGS) -o $@ $(OBJ)

.c.o:
	$(CC) $(CFLAGS) $(WFLAGS) -c $<

$(OBJ): dagrun.h

static: dagrun-static

dagrun-static: $(SRC) dagrun.h
	$(MUSLCC) -Os $(WFLAGS) -static -o $@ $(SRC)
	strip $@

check: dagrun
	DAGRUN=$$PWD/dagrun ./t/pytest -q t
	mandoc -Tlint -W warning man/dagrun.1 man/dagrun.ini.5

install: dagrun
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5
	cp dagrun $(DESTDIR)$(BINDIR)/
	cp man/dagrun.1 $(DESTDIR)$(MANDIR)/man1/
	cp man/dagrun.ini.5 $(DESTDIR)$(MANDIR)/man5/

clean:
	rm -f dagrun dagrun-static $(OBJ)

.PHONY: all static check install clean
