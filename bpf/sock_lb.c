/* Socket-level load balancer: cgroup sock_addr programs that rewrite a connect()/sendmsg()
 * to a virtual IPv4 service into a backend, and translate the backend back to the virtual
 * address for getpeername()/recvmsg() (as Cilium's bpf_sock.c does).
 *
 * Maps (fed by sock_lb.py):
 *   services: (address, port, protocol, family) -> (count, base) of the service's slot range
 *   slots:    array; slot -> backend address/port. A weight w is w repeated slots, so
 *             slot = base + pick % count is a weighted choice (pick: random for TCP, the
 *             socket cookie for UDP so one UDP socket stays on one backend).
 *   revnat:   LRU (socket cookie, backend address, port) -> virtual address, port. Keyed by
 *             the backend too, because an unconnected UDP socket may talk to two services.
 * Addresses are 4 x u32 with IPv4 in ip[3], so IPv6 can share the maps later.
 * Every program returns 1 (allow): a miss leaves the call untouched.
 */
#include <uapi/linux/bpf.h>

#define SLUICE_AF_INET 2
#define SLUICE_IPPROTO_UDP 17

#ifndef MAX_SERVICES
#define MAX_SERVICES 4096
#endif
#ifndef MAX_SLOTS
#define MAX_SLOTS 65536
#endif
#ifndef MAX_REVNAT
#define MAX_REVNAT 65536
#endif

enum { STAT_TRANSLATED, STAT_NO_BACKEND, STAT_REVNAT_HIT, STAT_MAX };

struct svc_key { u32 ip[4]; u16 port; u8 proto; u8 family; };
struct svc_val { u32 count; u32 base; };
struct slot { u32 ip[4]; u16 port; u8 family; u8 pad; };
struct rnat_key { u64 cookie; u32 ip[4]; u16 port; u8 family; u8 pad; u32 pad2; };
struct rnat_val { u32 ip[4]; u16 port; u8 family; u8 pad; };

BPF_HASH(services, struct svc_key, struct svc_val, MAX_SERVICES);
BPF_ARRAY(slots, struct slot, MAX_SLOTS);
BPF_TABLE("lru_hash", struct rnat_key, struct rnat_val, revnat, MAX_REVNAT);
BPF_ARRAY(stats, u64, STAT_MAX);

static __always_inline int lb4(struct bpf_sock_addr *ctx, int per_socket)
{
    struct svc_key key;
    __builtin_memset(&key, 0, sizeof(key));
    key.ip[3] = ctx->user_ip4;
    key.port = (u16)ctx->user_port;
    key.proto = (u8)ctx->protocol;
    key.family = SLUICE_AF_INET;
    struct svc_val *sv = services.lookup(&key);
    if (!sv)
        return 1;
    /* Copy once: replace() swaps the whole value, never count and base separately. */
    u32 count = sv->count;
    u32 base = sv->base;
    if (count == 0) {
        stats.atomic_increment(STAT_NO_BACKEND);
        return 1;
    }
    u64 cookie = bpf_get_socket_cookie(ctx);
    u32 pick = per_socket ? (u32)cookie : bpf_get_prandom_u32();
    u32 idx = base + pick % count;
    struct slot *be = slots.lookup(&idx);
    if (!be || be->port == 0)
        return 1;

    struct rnat_key rk;
    __builtin_memset(&rk, 0, sizeof(rk));
    rk.cookie = cookie;
    rk.ip[3] = be->ip[3];
    rk.port = be->port;
    rk.family = SLUICE_AF_INET;
    struct rnat_val rv;
    __builtin_memset(&rv, 0, sizeof(rv));
    rv.ip[3] = key.ip[3];
    rv.port = key.port;
    rv.family = SLUICE_AF_INET;
    revnat.update(&rk, &rv);

    ctx->user_ip4 = rk.ip[3];
    ctx->user_port = rk.port;
    stats.atomic_increment(STAT_TRANSLATED);
    return 1;
}

static __always_inline int rev4(struct bpf_sock_addr *ctx)
{
    struct rnat_key rk;
    __builtin_memset(&rk, 0, sizeof(rk));
    rk.cookie = bpf_get_socket_cookie(ctx);
    rk.ip[3] = ctx->user_ip4;
    rk.port = (u16)ctx->user_port;
    rk.family = SLUICE_AF_INET;
    struct rnat_val *rv = revnat.lookup(&rk);
    if (!rv)
        return 1;
    ctx->user_ip4 = rv->ip[3];
    ctx->user_port = rv->port;
    stats.atomic_increment(STAT_REVNAT_HIT);
    return 1;
}

int sock4_connect(struct bpf_sock_addr *ctx)
{
    return lb4(ctx, ctx->protocol == SLUICE_IPPROTO_UDP);
}

int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
    return lb4(ctx, 1);
}

int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
    return rev4(ctx);
}

int sock4_getpeername(struct bpf_sock_addr *ctx)
{
    return rev4(ctx);
}
