/*
 * loadgen.c - closed-loop TCP echo load generator for bench/echo_run.py.
 *
 *     loadgen HOST PORT CONNS MSG_SIZE DURATION_S [WARMUP_S]
 *
 * Opens CONNS TCP connections to HOST:PORT.  Each connection has exactly one
 * message in flight: it writes MSG_SIZE bytes, waits until the whole echo is
 * back (and matches what was sent), then writes the next one.  So offered
 * load adapts to the server ("closed loop") and req/s measures how fast the
 * server turns round trips around, not how deep it can queue.
 *
 * Design:
 *   - One thread, one level-triggered epoll set.  EPOLLIN is always armed
 *     (the server may echo the first part of a large message while we are
 *     still writing the rest); EPOLLOUT only while a write is incomplete.
 *   - Connections are opened non-blocking, all at once, with a deadline, so
 *     a server that never accepts cannot hang us.  Connect time is not
 *     measured.
 *   - Round trips are counted from the end of the warmup to the end of the
 *     window; the window length is taken from the clock, not assumed.
 *   - A connection that fails (reset, EOF, corrupted echo) is counted in
 *     "errors" and dropped, never reconnected: a correct echo server
 *     produces errors == 0, and the harness discards samples that don't.
 *   - alarm() enforces a hard wall-clock limit whatever the server does.
 *   - Only loopback addresses are accepted: this tool must never put
 *     benchmark traffic on a real network.
 *
 * Output: one JSON line on stdout, e.g.
 *   {"conns":50,"size":64,"seconds":3.000,"requests":123456,"rps":41152.0,"errors":0}
 * Exit status: 0 run completed (check "errors"), 1 setup/connect failure,
 * 2 bad usage, 3 hard time limit hit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS      10000
#define MAX_MSG        (4 * 1024 * 1024)
#define MAX_DURATION   600.0
#define MAX_WARMUP     60.0
#define CONNECT_S      10.0   /* all connections must be up within this */
#define SLACK_S        10     /* extra seconds before the hard kill */
#define MAX_EVENTS     512

struct conn {
    int fd;
    size_t sent;      /* bytes of the current message written so far */
    size_t rcvd;      /* bytes of its echo read back so far */
    int out_armed;    /* EPOLLOUT is in the interest set */
    int dead;
};

static struct conn *conns;
static int nconns, alive, ep;
static size_t msg_size;
static unsigned char *msg, *rbuf;
static long long completed;   /* round trips since the start of the warmup */
static long long errors;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_alarm(int sig)
{
    static const char m[] = "loadgen: hard time limit reached, aborting\n";
    (void)sig;
    /* async-signal-safe: write + _exit only */
    ssize_t r = write(2, m, sizeof m - 1);
    (void)r;
    _exit(3);
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s\n", what);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen HOST PORT CONNS MSG_SIZE DURATION_S [WARMUP_S]\n"
            "  HOST must be a loopback address (127.0.0.0/8, ::1, localhost)\n");
    exit(2);
}

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return 0;
}

static void set_interest(struct conn *c, int want_out)
{
    struct epoll_event ev;
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
    ev.data.u32 = (uint32_t)(c - conns);
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl(MOD) failed");
    c->out_armed = want_out;
}

static void kill_conn(struct conn *c, const char *why)
{
    if (c->dead)
        return;
    /* Report only the first few; 500 identical lines help nobody. */
    if (errors < 5)
        fprintf(stderr, "loadgen: connection %d: %s\n", (int)(c - conns), why);
    errors++;
    c->dead = 1;
    alive--;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

/* Write as much of the current message as the socket takes; arm EPOLLOUT
 * only when it is full, so the common case costs no epoll_ctl at all. */
static void pump_send(struct conn *c)
{
    while (c->sent < msg_size) {
        ssize_t w = send(c->fd, msg + c->sent, msg_size - c->sent, MSG_NOSIGNAL);
        if (w > 0) {
            c->sent += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->out_armed)
                set_interest(c, 1);
            return;
        } else {
            kill_conn(c, w < 0 ? strerror(errno) : "send returned 0");
            return;
        }
    }
    if (c->out_armed)
        set_interest(c, 0);
}

static void pump_recv(struct conn *c)
{
    /* Never ask for more than the rest of this echo: the server owes us
     * nothing beyond it, and anything extra would be a protocol error. */
    size_t want = msg_size - c->rcvd;
    if (want == 0) {
        kill_conn(c, "server sent more than was written");
        return;
    }
    ssize_t r = recv(c->fd, rbuf, want, 0);
    if (r > 0) {
        if ((size_t)r > c->sent - c->rcvd || memcmp(rbuf, msg + c->rcvd, (size_t)r) != 0) {
            kill_conn(c, "echo does not match what was sent");
            return;
        }
        c->rcvd += (size_t)r;
        if (c->rcvd == msg_size) {
            completed++;
            c->sent = c->rcvd = 0;
            pump_send(c);
        }
    } else if (r == 0) {
        kill_conn(c, "server closed the connection");
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        kill_conn(c, strerror(errno));
    }
}

static double parse_num(const char *s, double lo, double hi)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || v < lo || v > hi)
        usage();
    return v;
}

/* Open every connection non-blocking and wait for all of them, so the
 * deadline covers the whole set rather than each connection in turn. */
static void connect_all(const struct addrinfo *ai, const char *host, const char *port)
{
    struct epoll_event ev, evs[MAX_EVENTS];
    int pending = nconns, one = 1;
    double deadline = now() + CONNECT_S;

    for (int i = 0; i < nconns; i++) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0)
            die("socket() failed (too many connections for the fd limit?)");
        /* Small messages must leave at once; Nagle would turn a latency
         * benchmark into a measurement of the delayed-ACK timer. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            fprintf(stderr, "loadgen: cannot connect to %s:%s: %s\n", host, port,
                    strerror(errno));
            exit(1);
        }
        conns[i].fd = fd;
        ev.events = EPOLLOUT;
        ev.data.u32 = (uint32_t)i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl(ADD) failed");
    }

    while (pending > 0) {
        double left = deadline - now();
        if (left <= 0) {
            fprintf(stderr, "loadgen: cannot connect to %s:%s: %d of %d connections "
                    "not established within %.0f s\n", host, port, pending, nconns,
                    CONNECT_S);
            exit(1);
        }
        int n = epoll_wait(ep, evs, MAX_EVENTS, (int)(left * 1000) + 1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait failed");
        for (int k = 0; k < n; k++) {
            struct conn *c = &conns[evs[k].data.u32];
            int err = 0;
            socklen_t len = sizeof err;
            if (c->out_armed)       /* reused here as "already connected" */
                continue;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
            if (err) {
                fprintf(stderr, "loadgen: cannot connect to %s:%s: %s\n", host, port,
                        strerror(err));
                exit(1);
            }
            c->out_armed = 1;
            pending--;
        }
    }
    /* Steady state: read interest only until a write comes up short. */
    for (int i = 0; i < nconns; i++)
        set_interest(&conns[i], 0);
}

int main(int argc, char **argv)
{
    if (argc < 6 || argc > 7)
        usage();
    const char *host = argv[1], *port = argv[2];
    nconns = (int)parse_num(argv[3], 1, MAX_CONNS);
    msg_size = (size_t)parse_num(argv[4], 1, MAX_MSG);
    double duration = parse_num(argv[5], 0.01, MAX_DURATION);
    double warmup = argc == 7 ? parse_num(argv[6], 0, MAX_WARMUP) : 0.0;

    signal(SIGALRM, on_alarm);
    alarm((unsigned)(CONNECT_S + warmup + duration) + SLACK_S);
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = {0}, *ai;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "loadgen: cannot resolve %s:%s: %s\n", host, port, gai_strerror(gai));
        return 1;
    }
    if (!is_loopback(ai->ai_addr)) {
        fprintf(stderr, "loadgen: refusing non-loopback address %s\n", host);
        return 2;
    }

    /* 500+ sockets can exceed a default soft limit of 1024 minus what the
     * parent left open; take what the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    conns = calloc((size_t)nconns, sizeof *conns);
    msg = malloc(msg_size);
    rbuf = malloc(msg_size);
    if (!conns || !msg || !rbuf)
        die("out of memory");
    /* A non-repeating-looking pattern, so a server that reorders or
     * duplicates chunks fails the echo check instead of passing it. */
    for (size_t i = 0; i < msg_size; i++)
        msg[i] = (unsigned char)((i * 131u + (i >> 8) * 7u + 17u) & 0xff);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1 failed");
    connect_all(ai, host, port);
    freeaddrinfo(ai);
    alive = nconns;

    double t0 = now();
    double t_measure = t0 + warmup, t_end = t_measure + duration;
    double m_start = t0;
    long long base = 0;
    int measuring = 0;
    struct epoll_event evs[MAX_EVENTS];

    for (int i = 0; i < nconns; i++)
        pump_send(&conns[i]);

    for (;;) {
        double t = now();
        if (!measuring && t >= t_measure) {
            measuring = 1;
            base = completed;
            m_start = t;
        }
        if (t >= t_end || alive == 0)
            break;
        /* Wake up at the next window boundary even when the server is
         * silent, so a stalled server still ends the run on time. */
        double next = measuring ? t_end : t_measure;
        int ms = (int)((next - t) * 1000) + 1;
        int n = epoll_wait(ep, evs, MAX_EVENTS, ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait failed");
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = &conns[evs[k].data.u32];
            uint32_t e = evs[k].events;
            if (c->dead)
                continue;
            if (e & EPOLLOUT)
                pump_send(c);
            if (!c->dead && (e & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                pump_recv(c);   /* recv reports the error or EOF itself */
        }
    }

    double m_end = now();
    long long requests = measuring ? completed - base : 0;
    double seconds = measuring ? m_end - m_start : 0.0;
    printf("{\"conns\":%d,\"size\":%zu,\"seconds\":%.4f,\"warmup\":%.3f,"
           "\"requests\":%lld,\"rps\":%.1f,\"errors\":%lld,\"alive\":%d}\n",
           nconns, msg_size, seconds, warmup, requests,
           seconds > 0 ? requests / seconds : 0.0, errors, alive);
    fflush(stdout);
    return 0;
}
