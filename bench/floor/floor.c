// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * The floor of tcpreset's design, for bench/idle.ts (issue 8): the least a
 * consumer of the same ring buffer can do. It loads the same XDP object
 * (build/tcpreset.bpf.o), puts one whole-host target in its map, attaches
 * the program to the sniff interface (native, generic as fallback, like the
 * daemon's 'auto'), then loops in ring_buffer__poll() with libbpf's default
 * adaptive wake-up. Per record it forges the same RSTs as
 * src/packet/forge.ts (same table, same order, TTL 64 for the side whose
 * TTL it has not seen) and, once the poll returns, sends them with one
 * sendmmsg per family on IPPROTO_RAW sockets bound to the reset interface
 * with SO_BINDTODEVICE (src/net/sender.ts's l3 mode). Nothing else: no
 * logs, no counters beyond three integers, no flow bookkeeping.
 *
 *   floor OBJECT SNIFF_IF RESET_IF HOST [NICE]
 *
 * NICE (default 0) is set with setpriority() before the loop: bench/idle.ts
 * runs the floor at the nice value tcpresetd gives its event thread (-10),
 * so the two are compared at the same scheduling priority.
 * Prints "ready <ifindex> <native|generic>" on stdout once attached; on
 * SIGINT/SIGTERM prints "records N sent N errors N" on stderr and exits 0
 * (closing the link detaches the program). Root needed.
 *
 * The handler and the flush are separate, non-inlined functions so a probe
 * (bench/split/) can stamp them.
 */
#define _GNU_SOURCE /* sendmmsg */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "../../bpf/tcpreset.h"

#define SLOTS 256
#define MAX_PKT 64

struct lane {
	int fd;
	int family;
	unsigned count;
	unsigned char pkt[SLOTS][MAX_PKT];
	struct iovec iov[SLOTS];
	struct mmsghdr msg[SLOTS];
	struct sockaddr_storage dst[SLOTS];
};

static struct lane lanes[2]; /* [0] IPv4, [1] IPv6 */
static int reset_ifindex;
static volatile sig_atomic_t stop;
static unsigned long long records, sent, errors;

static void on_signal(int sig) { (void)sig; stop = 1; }

static unsigned fold(unsigned long s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (unsigned)s;
}

static unsigned long sum16(const __u8 *p, int n)
{
	unsigned long s = 0;
	for (int i = 0; i + 1 < n; i += 2)
		s += (p[i] << 8) | p[i + 1];
	return s;
}

static void put32(__u8 *p, __u32 v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static void put16(__u8 *p, __u16 v) { p[0] = v >> 8; p[1] = v; }

/* One RST, as forge.ts build(): to_dst = spoofed from A (the observed sender) toward B. */
static void queue_rst(const struct tr_event *e, int to_dst, __u32 seq, __u32 ack, __u8 flags)
{
	int v4 = e->family == TR_FAMILY_V4;
	struct lane *l = &lanes[v4 ? 0 : 1];
	if (l->count == SLOTS)
		return; /* a bigger burst than one poll: the benchmark never gets here */
	int alen = v4 ? 4 : 16;
	const __u8 *src = to_dst ? e->saddr : e->daddr;
	const __u8 *dst = to_dst ? e->daddr : e->saddr;
	__u16 sport = to_dst ? e->sport : e->dport;
	__u16 dport = to_dst ? e->dport : e->sport;
	__u8 ttl = to_dst ? e->ttl : 64;
	__u8 dscp = e->tos & 0xfc;
	__u8 *p = l->pkt[l->count];
	int t = v4 ? 20 : 40;
	memset(p, 0, t + 20);
	if (v4) {
		__u16 id = (__u16)random();
		p[0] = 0x45; p[1] = dscp; put16(p + 2, 40); put16(p + 4, id); p[6] = 0x40;
		p[8] = ttl ? ttl : 64; p[9] = IPPROTO_TCP;
		memcpy(p + 12, src, 4); memcpy(p + 16, dst, 4);
		put16(p + 10, ~fold(sum16(p, 20)) & 0xffff);
	} else {
		__u32 fl = e->flow_label & 0xfffff;
		p[0] = 0x60 | (dscp >> 4); p[1] = ((dscp & 0x0f) << 4) | (fl >> 16); p[2] = fl >> 8; p[3] = fl;
		put16(p + 4, 20); p[6] = IPPROTO_TCP; p[7] = ttl ? ttl : 64;
		memcpy(p + 8, src, 16); memcpy(p + 24, dst, 16);
	}
	__u8 *th = p + t;
	put16(th, sport); put16(th + 2, dport); put32(th + 4, seq); put32(th + 8, ack);
	th[12] = 0x50; th[13] = flags;
	unsigned long s = sum16(src, alen) + sum16(dst, alen) + IPPROTO_TCP + 20 + sum16(th, 20);
	put16(th + 16, ~fold(s) & 0xffff);

	struct sockaddr_storage *ss = &l->dst[l->count];
	memset(ss, 0, sizeof(*ss));
	if (v4) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		memcpy(&a->sin_addr, dst, 4);
		l->msg[l->count].msg_hdr.msg_namelen = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		memcpy(&a->sin6_addr, dst, 16);
		a->sin6_scope_id = reset_ifindex;
		l->msg[l->count].msg_hdr.msg_namelen = sizeof(*a);
	}
	l->iov[l->count].iov_len = t + 20;
	l->count++;
}

/* forge.ts forgeResets(): the table of RSTs for one observed segment. */
__attribute__((noinline)) int floor_on_record(void *ctx, void *data, size_t size)
{
	(void)ctx;
	if (size < sizeof(struct tr_event))
		return 0;
	const struct tr_event *e = data;
	__u8 f = e->tcp_flags;
	records++;
	if (f & TR_TCP_RST)
		return 0;
	__u32 s = e->seq, k = e->ack;
	__u32 n = s + e->payload_len + !!(f & TR_TCP_SYN) + !!(f & TR_TCP_FIN);
	__u8 ra = TR_TCP_RST | TR_TCP_ACK;
	if (f & TR_TCP_SYN) {
		if (!(f & TR_TCP_ACK)) {
			queue_rst(e, 0, 0, s + 1, ra);
			return 0;
		}
		queue_rst(e, 0, k, s + 1, ra);
		queue_rst(e, 1, n, k, ra);
		return 0;
	}
	if (!(f & TR_TCP_ACK)) {
		queue_rst(e, 1, n, 0, TR_TCP_RST);
		return 0;
	}
	queue_rst(e, 0, k, n, ra);
	queue_rst(e, 1, n, k, ra);
	return 0;
}

__attribute__((noinline)) void floor_flush(void)
{
	for (int i = 0; i < 2; i++) {
		struct lane *l = &lanes[i];
		unsigned off = 0;
		while (off < l->count) {
			int r = sendmmsg(l->fd, l->msg + off, l->count - off, MSG_DONTWAIT);
			if (r <= 0) {
				errors++;
				off++;
				continue;
			}
			sent += r;
			off += r;
		}
		l->count = 0;
	}
}

static int open_lane(struct lane *l, int family, const char *ifname)
{
	l->family = family;
	l->fd = socket(family, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
	if (l->fd < 0)
		return -errno;
	if (setsockopt(l->fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, strlen(ifname) + 1) < 0)
		return -errno;
	for (int i = 0; i < SLOTS; i++) {
		l->iov[i].iov_base = l->pkt[i];
		l->msg[i].msg_hdr.msg_iov = &l->iov[i];
		l->msg[i].msg_hdr.msg_iovlen = 1;
		l->msg[i].msg_hdr.msg_name = &l->dst[i];
	}
	return 0;
}

static int die(const char *what, int err)
{
	fprintf(stderr, "floor: %s: %s (errno %d)\n", what, strerror(err < 0 ? -err : err), err < 0 ? -err : err);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: floor OBJECT SNIFF_IF RESET_IF HOST [NICE]\n");
		return 64;
	}
	int nice_value = 0;
	if (argc == 6) {
		char *end;
		long n = strtol(argv[5], &end, 10);
		if (*argv[5] == '\0' || *end != '\0' || n < -20 || n > 19) {
			fprintf(stderr, "floor: NICE %s is not an integer from -20 to 19\n", argv[5]);
			return 64;
		}
		nice_value = (int)n;
	}
	const char *objpath = argv[1], *sniff = argv[2], *reset = argv[3], *host = argv[4];
	struct tr_target_key key;
	memset(&key, 0, sizeof(key));
	if (inet_pton(AF_INET, host, key.addr) == 1)
		key.family = TR_FAMILY_V4;
	else if (inet_pton(AF_INET6, host, key.addr) == 1)
		key.family = TR_FAMILY_V6;
	else {
		fprintf(stderr, "floor: HOST %s is not an IPv4 or IPv6 address\n", host);
		return 64;
	}
	int sniff_ifindex = if_nametoindex(sniff);
	if (!sniff_ifindex)
		return die(sniff, errno);
	reset_ifindex = if_nametoindex(reset);
	if (!reset_ifindex)
		return die(reset, errno);
	key.ifindex = sniff_ifindex;
	key.port = TR_PORT_ANY;

	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	struct bpf_object *obj = bpf_object__open_file(objpath, NULL);
	if (!obj)
		return die("open object", errno);
	int err = bpf_object__load(obj);
	if (err)
		return die("load object", err);
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, TR_PROG_NAME);
	int targets = bpf_object__find_map_fd_by_name(obj, TR_MAP_TARGETS);
	int prefilter = bpf_object__find_map_fd_by_name(obj, TR_MAP_PREFILTER);
	int events = bpf_object__find_map_fd_by_name(obj, TR_MAP_EVENTS);
	if (!prog || targets < 0 || prefilter < 0 || events < 0)
		return die("find program and maps", ENOENT);

	struct tr_target_value val = { .target_id = 1, .expires_ns = 0 };
	if (bpf_map_update_elem(targets, &key, &val, BPF_ANY))
		return die("update targets", errno);
	/* The prefilter bit, as src/dataplane/prefilter.ts sets it. */
	__u32 bit = tr_prefilter_hash(key.ifindex, key.family, key.addr) & (TR_PREFILTER_BITS - 1);
	__u32 word = bit >> 6;
	__u64 w = 0;
	bpf_map_lookup_elem(prefilter, &word, &w);
	w |= 1ull << (bit & 63);
	if (bpf_map_update_elem(prefilter, &word, &w, BPF_ANY))
		return die("update prefilter", errno);

	if ((err = open_lane(&lanes[0], AF_INET, reset)) || (err = open_lane(&lanes[1], AF_INET6, reset)))
		return die("open raw socket", err);

	struct ring_buffer *rb = ring_buffer__new(events, floor_on_record, NULL, NULL);
	if (!rb)
		return die("ring_buffer__new", errno);

	const char *mode = "native";
	LIBBPF_OPTS(bpf_link_create_opts, lopts, .flags = XDP_FLAGS_DRV_MODE);
	int link = bpf_link_create(bpf_program__fd(prog), sniff_ifindex, BPF_XDP, &lopts);
	if (link < 0) {
		mode = "generic";
		lopts.flags = XDP_FLAGS_SKB_MODE;
		link = bpf_link_create(bpf_program__fd(prog), sniff_ifindex, BPF_XDP, &lopts);
	}
	if (link < 0)
		return die("attach XDP", link);

	if (nice_value && setpriority(PRIO_PROCESS, 0, nice_value) < 0)
		return die("setpriority", errno);

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: the poll returns EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	srandom(getpid());
	printf("ready %d %s %d\n", sniff_ifindex, mode, nice_value);
	fflush(stdout);

	while (!stop) {
		int n = ring_buffer__poll(rb, -1);
		if (n > 0)
			floor_flush();
		else if (n < 0 && n != -EINTR)
			return die("ring_buffer__poll", n);
	}
	close(link);
	ring_buffer__free(rb);
	bpf_object__close(obj);
	fprintf(stderr, "records %llu sent %llu errors %llu\n", records, sent, errors);
	return 0;
}
