# Sluice: `make run` starts the gateway on the quickstart; `make test` runs every test.
# Every target sets up what it needs first; `setup` is idempotent and cheap when done.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sluice-setup
KREL := $(shell uname -r)
APT_PACKAGES := python3-venv python3-bpfcc bpfcc-tools linux-headers-amd64 iproute2 nginx libnginx-mod-stream haproxy wrk openssl curl

.PHONY: setup system-packages kernel-headers bpffs run test lint bench clean

setup: system-packages kernel-headers bpffs $(STAMP)

# System packages: bcc and kernel headers for the eBPF layer, and the peers the
# benchmarks compare against. Installed only when something is missing.
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "setup: need root to install:$$missing" >&2; exit 1; fi; \
	  echo "setup: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# bcc compiles against the running kernel's headers; when the distribution has
# no package for this exact kernel, its generic amd64 headers serve. Debian
# splits them: build/ is the -amd64 tree, source/ the -common one (which holds
# include/linux/kconfig.h); a link made the wrong way is repaired.
kernel-headers:
	@if [ ! -e /lib/modules/$(KREL)/source/include/linux/kconfig.h ] && [ "$$(id -u)" = 0 ]; then \
	  hdr=$$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1); \
	  common=$${hdr%-amd64}-common; \
	  if [ -n "$$hdr" ] && [ -d "$$common" ]; then \
	    mkdir -p /lib/modules/$(KREL); \
	    ln -sfn $$hdr /lib/modules/$(KREL)/build; \
	    ln -sfn $$common /lib/modules/$(KREL)/source; \
	    echo "setup: linked kernel headers $$hdr and $$common for $(KREL)"; \
	  fi; \
	fi

# bpffs for pinned maps, and a cgroup v2 hierarchy for the socket-level
# programs (hybrid hosts mount it at /sys/fs/cgroup/unified).
bpffs:
	@if [ "$$(id -u)" = 0 ] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then \
	  mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf || echo "setup: could not mount bpffs" >&2; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! grep -q ' cgroup2 ' /proc/self/mounts; then \
	  mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified \
	    || echo "setup: could not mount cgroup2" >&2; \
	fi

PLUGIN := examples/plugins/sluice-example-plugin

$(STAMP): pyproject.toml $(PLUGIN)/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip 'setuptools>=77' 2>&1 | grep -v '^WARNING' || true
	@$(PY) -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING' || true
	@# The example plugin is installed so the suite can prove the entry-point path.
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e $(PLUGIN) 2>&1 | grep -v '^WARNING' || true
	@$(PY) -c 'import gateway, aiohttp, uvloop, httptools, sluice_example_plugin' 
	@# bcc is the distribution's (the PyPI "bcc" is unrelated): link just that package in.
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  if [ -d /usr/lib/python3/dist-packages/bcc ]; then ln -sfn /usr/lib/python3/dist-packages/bcc $$site/bcc; fi
	@touch $(STAMP)

run: setup
	$(VENV)/bin/gateway run --quickstart

test: setup lint
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check gateway middleware bpf providers tests bench examples/plugins
	$(VENV)/bin/mypy
	MYPYPATH=$(CURDIR) $(VENV)/bin/mypy --strict $(PLUGIN)/src/sluice_example_plugin

bench: setup
	@$(PY) -m pip install -q -e '.[bench]' 2>&1 | grep -v '^WARNING' || true
	$(PY) bench/http.py; s=$$?; $(PY) bench/scale.py || s=1; $(PY) bench/l4.py || s=1; exit $$s

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
