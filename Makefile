# falg: see README.md. Targets that touch the kernel need root.
GO      ?= go
# An execution count, not a duration: Go 1.26's fuzz coordinator can fail a
# target with "context deadline exceeded" when a duration ends mid-run
# (go.dev/issue/75804, fixed in Go 1.27). Longer: make fuzz FUZZTIME=5000000x
FUZZTIME ?= 50000x
PREFIX  ?= /usr/local
DEB_PKGS = nftables iproute2 conntrack curl iperf3 procps systemd

.PHONY: all build demo test check-format vet unit fuzz bench deps install clean

all: build

build:
	$(GO) build -o bin/falg ./cmd/falg

# The README's first command: a namespace lab, falg on its embedded config, real clients.
demo: deps build
	./bin/falg demo

# The README's second command: formatting, vet, every test (e2e included: needs root), short fuzzing.
test: deps check-format vet
	$(GO) test -race -count=1 -timeout 30m ./...
	$(MAKE) fuzz

check-format:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -short ./...

# Every fuzz target, briefly.
fuzz:
	@set -e; for pkg in ./protocol ./dump ./nfq; do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg > /tmp/falg-fuzz.log 2>&1 || { cat /tmp/falg-fuzz.log; exit 1; }; \
		done; \
	done

bench: deps build
	./test/bench/run.sh

# Installs missing Debian packages the demo and the tests use.
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

install: build
	install -D -m 0755 bin/falg $(DESTDIR)$(PREFIX)/bin/falg
	install -D -m 0644 configs/falg.yaml $(DESTDIR)/etc/falg/falg.yaml.example
	install -D -m 0644 contrib/falg.service $(DESTDIR)/etc/systemd/system/falg.service
	install -D -m 0644 docs/operations.md $(DESTDIR)$(PREFIX)/share/doc/falg/operations.md

clean:
	rm -rf bin
