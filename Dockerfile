# Sluice: a Traefik-style gateway over an eBPF L3/L4 layer.
#
#   docker build -t sluice .
#   docker run --rm --network host sluice          # the embedded quickstart, as `make run`
#
# Debian bookworm, because bcc comes from the distribution (python3-bpfcc,
# bcc 0.26), not from PyPI, whose package named "bcc" is unrelated.
#
# --- Running the eBPF layer (planned; nothing below is needed yet) -------------
#
# Today Sluice serves HTTP from userspace only and needs no privileges. Once
# the eBPF layer lands (socket load balancer on cgroup connect/sendmsg hooks,
# sockhash splice, XDP/tc allowlist), the container will need:
#
#   CAP_BPF          load programs and create maps (kernel 5.8+)
#   CAP_PERFMON      pointer arithmetic in programs and perf/ring-buffer
#                    events (kernel 5.8+)
#   CAP_NET_ADMIN    attach cgroup sock_addr, sk_skb, XDP and tc programs
#   CAP_SYS_ADMIN    kernels before 5.8 have no CAP_BPF/CAP_PERFMON and require
#                    it for bpf(2), and for cgroup attach
#   CAP_SYS_RESOURCE raise RLIMIT_MEMLOCK on kernels before 5.11, which charge
#                    maps against it (or pass --ulimit memlock=-1:-1)
#   /sys/fs/bpf      the host's bpffs, so maps pinned under /sys/fs/bpf/sluice/
#                    outlive a restart of the container
#   /sys/fs/cgroup   the cgroup v2 fs, with --cgroupns host, so the programs
#                    attach to the host's root cgroup rather than the container's
#   --network host   the socket load balancer acts on the host's connections and
#                    XDP on its interfaces
#   kernel headers   bcc compiles the programs at start against the running
#                    kernel: mount /lib/modules and /usr/src from the host (or
#                    load the kheaders module, which bcc reads instead)
#
#   docker run --rm --network host --cgroupns host \
#     --cap-add BPF --cap-add PERFMON --cap-add NET_ADMIN \
#     --cap-add SYS_ADMIN --cap-add SYS_RESOURCE \
#     -v /sys/fs/bpf:/sys/fs/bpf -v /sys/fs/cgroup:/sys/fs/cgroup \
#     -v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro \
#     -v "$PWD/examples/quickstart:/etc/sluice:ro" \
#     sluice run --config /etc/sluice/sluice.yml
#
# Without host networking, bind the listeners to every interface, since the
# quickstart's 127.0.0.1 inside the container cannot be published:
#
#   docker run --rm -p 8080:8080 -p 9000:9000 sluice \
#     run --quickstart --entryPoints.web.address=:8080 --api.address=:9000

FROM python:3.11-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3-bpfcc bpfcc-tools iproute2 \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/sluice \
    PATH=/opt/sluice/bin:$PATH \
    PYTHONUNBUFFERED=1

# The image's Python is /usr/local/bin/python3, whose system site-packages is
# not Debian's /usr/lib/python3/dist-packages, so --system-site-packages would
# not find bcc. Link just that package in, as the Makefile does: bcc is pure
# Python over libbcc through ctypes, so it works with this interpreter.
RUN python -m venv "$VIRTUAL_ENV" \
 && ln -s /usr/lib/python3/dist-packages/bcc \
      "$("$VIRTUAL_ENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/bcc"

# Only what the package is built from, so edits to tests or benchmarks do not
# invalidate this layer (.dockerignore keeps the rest out of the context too).
COPY pyproject.toml README.md /src/
COPY gateway /src/gateway
COPY middleware /src/middleware
COPY bpf /src/bpf
COPY providers /src/providers
RUN pip install --no-cache-dir /src && rm -rf /src

# Fail the build, not the first `docker run`, when the package is incomplete:
# bcc must import, and the embedded quickstart that CMD serves must validate.
RUN python -c "import bcc" \
 && gateway version \
 && python -c "from gateway.cli import QUICKSTART, main; raise SystemExit(main(['check', '--config', str(QUICKSTART / 'sluice.yml')]))"

# Root, because the eBPF layer needs the capabilities above; the HTTP data path
# alone would run as any user.
EXPOSE 8080 9000
ENTRYPOINT ["gateway"]
CMD ["run"]
