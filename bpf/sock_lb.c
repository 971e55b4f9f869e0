/* Socket-level load balancer: cgroup sock_addr programs that rewrite a connect()/sendmsg()
 * to a virtual IPv4 or IPv6 service into a backend, and translate the backend back to the
 * virtual address for getpeername()/recvmsg() (as Cilium's bpf_sock.c does).
 *
 * Maps (fed by sock_lb.py):
 *   services: (address, port, protocol, family) -> (count, base) of the service's slot range
 *   slots:    array; slot -> backend address/port. A weight w is w repeated slots, so
 *             slot = base + pick % count is a weighted choice (pick: random for TCP, the
 *             socket cookie for UDP so one UDP socket stays on one backend).
 *   revnat:   LRU (socket cookie, backend address, port) -> virtual address, port. Keyed by
 *             the backend too, because an unconnected UDP socket may talk to two services.
 * Addresses are 4 x u32 (network order words) with IPv4 in ip[3] and the rest 0, so both
 * families share the maps; the family field in each key keeps them apart. A service and its
 * backends are one family (service_map.py checks), because a v4 hook cannot emit a v6 address.
 * Not handled: a v6 socket connecting to a v4-mapped address (::ffff:a.b.c.d) runs the v6
 * hooks with the mapped address, which no v6 service key holds, so it is left untouched.
 * Every program returns 1 (allow): a miss leaves the call untouched.
 */
#include <uapi/linux/bpf.h>

#define SLUICE_AF_INET 2
#define SLUICE_AF_INET6 10
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

/* The address the caller passed, by family. Only called with a constant family, so after
 * inlining each program touches only its own family's context fields: the verifier refuses
 * user_ip6 in an INET4 hook and user_ip4 in an INET6 one. */
static __always_inline void get_addr(struct bpf_sock_addr *ctx, int family, u32 ip[4])
{
    if (family == SLUICE_AF_INET6) {
        ip[0] = ctx->user_ip6[0];
        ip[1] = ctx->user_ip6[1];
        ip[2] = ctx->user_ip6[2];
        ip[3] = ctx->user_ip6[3];
    } else {
        ip[3] = ctx->user_ip4;
    }
}

static __always_inline void set_addr(struct bpf_sock_addr *ctx, int family, const u32 ip[4],
                                     u16 port)
{
    if (family == SLUICE_AF_INET6) {
        /* One u32 store per word: the verifier allows only 4-byte writes to user_ip6. */
        ctx->user_ip6[0] = ip[0];
        ctx->user_ip6[1] = ip[1];
        ctx->user_ip6[2] = ip[2];
        ctx->user_ip6[3] = ip[3];
    } else {
        ctx->user_ip4 = ip[3];
    }
    ctx->user_port = port;
}

static __always_inline int lb(struct bpf_sock_addr *ctx, int family, int per_socket)
{
    struct svc_key key;
    __builtin_memset(&key, 0, sizeof(key));
    get_addr(ctx, family, key.ip);
    key.port = (u16)ctx->user_port;
    key.proto = (u8)ctx->protocol;
    key.family = family;
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
    /* The loader keeps a service and its backends in one family; a mismatched slot would
     * hand this hook an address it cannot express, so it is left untranslated. */
    if (!be || be->port == 0 || be->family != family)
        return 1;

    struct rnat_key rk;
    __builtin_memset(&rk, 0, sizeof(rk));
    rk.cookie = cookie;
    rk.ip[0] = be->ip[0];
    rk.ip[1] = be->ip[1];
    rk.ip[2] = be->ip[2];
    rk.ip[3] = be->ip[3];
    rk.port = be->port;
    rk.family = family;
    struct rnat_val rv;
    __builtin_memset(&rv, 0, sizeof(rv));
    rv.ip[0] = key.ip[0];
    rv.ip[1] = key.ip[1];
    rv.ip[2] = key.ip[2];
    rv.ip[3] = key.ip[3];
    rv.port = key.port;
    rv.family = family;
    revnat.update(&rk, &rv);

    set_addr(ctx, family, rk.ip, rk.port);
    stats.atomic_increment(STAT_TRANSLATED);
    return 1;
}

static __always_inline int rev(struct bpf_sock_addr *ctx, int family)
{
    struct rnat_key rk;
    __builtin_memset(&rk, 0, sizeof(rk));
    rk.cookie = bpf_get_socket_cookie(ctx);
    get_addr(ctx, family, rk.ip);
    rk.port = (u16)ctx->user_port;
    rk.family = family;
    struct rnat_val *rv = revnat.lookup(&rk);
    if (!rv)
        return 1;
    u32 ip[4] = {rv->ip[0], rv->ip[1], rv->ip[2], rv->ip[3]};
    set_addr(ctx, family, ip, rv->port);
    stats.atomic_increment(STAT_REVNAT_HIT);
    return 1;
}

int sock4_connect(struct bpf_sock_addr *ctx)
{
    return lb(ctx, SLUICE_AF_INET, ctx->protocol == SLUICE_IPPROTO_UDP);
}

int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
    return lb(ctx, SLUICE_AF_INET, 1);
}

int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
    return rev(ctx, SLUICE_AF_INET);
}

int sock4_getpeername(struct bpf_sock_addr *ctx)
{
    return rev(ctx, SLUICE_AF_INET);
}

int sock6_connect(struct bpf_sock_addr *ctx)
{
    return lb(ctx, SLUICE_AF_INET6, ctx->protocol == SLUICE_IPPROTO_UDP);
}

int sock6_sendmsg(struct bpf_sock_addr *ctx)
{
    return lb(ctx, SLUICE_AF_INET6, 1);
}

int sock6_recvmsg(struct bpf_sock_addr *ctx)
{
    return rev(ctx, SLUICE_AF_INET6);
}

int sock6_getpeername(struct bpf_sock_addr *ctx)
{
    return rev(ctx, SLUICE_AF_INET6);
}
