/*
 * c_server.c - plain C epoll echo server: the ceiling for bench/echo_run.py.
 *
 *     c_server PORT [MAX_SECONDS]
 *
 * Listens on 127.0.0.1:PORT, prints "READY" once listening, and echoes every
 * byte back on every connection.  It exists to show what the machine and the
 * kernel allow with no language runtime in the way, so it is deliberately the
 * simplest fast design, the one a C programmer would write first:
 *
 *   - one thread, one level-triggered epoll set, non-blocking sockets;
 *   - each readable event does one read into a shared 64 KiB buffer and
 *     writes it straight back; only the part a short write leaves over is
 *     copied into a per-connection buffer;
 *   - while a connection has unsent data it is watched for EPOLLOUT only,
 *     so a client that doesn't read its echo is not read from either
 *     (backpressure, bounded memory) - the same behaviour as the Python
 *     servers' sendall()/drain();
 *   - TCP_NODELAY on accepted sockets, as every runtime under test sets it.
 *
 * The process lives at most MAX_SECONDS (default 600; SIGALRM's default
 * action ends it) so a harness that dies cannot leave it behind forever.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE     65536
#define MAX_EVENTS   512
#define ACCEPT_BATCH 256   /* accepts per wakeup, so a flood cannot starve I/O */

struct conn {
    int fd;
    unsigned char *pending;   /* unsent tail of the last echo, or NULL */
    size_t off, len;
};

static int ep;
static unsigned char buf[BUF_SIZE];

static void fatal(const char *what)
{
    perror(what);
    exit(1);
}

static void watch(struct conn *c, int op, uint32_t events)
{
    struct epoll_event ev;
    ev.events = events;
    ev.data.ptr = c;
    if (epoll_ctl(ep, op, c->fd, &ev) < 0)
        fatal("epoll_ctl");
}

static void drop(struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Write data; keep what the socket does not take.  Returns -1 if the
 * connection failed, 0 if everything went out, 1 if some is pending. */
static int send_or_keep(struct conn *c, const unsigned char *data, size_t len)
{
    while (len > 0) {
        ssize_t w = send(c->fd, data, len, MSG_NOSIGNAL);
        if (w > 0) {
            data += w;
            len -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            return -1;
        }
    }
    if (len == 0)
        return 0;
    /* data may point into the shared read buffer: copy before returning. */
    unsigned char *p = malloc(len);
    if (!p)
        return -1;
    memmove(p, data, len);
    free(c->pending);
    c->pending = p;
    c->off = 0;
    c->len = len;
    return 1;
}

static void on_readable(struct conn *c)
{
    ssize_t r = recv(c->fd, buf, sizeof buf, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        drop(c);
        return;
    }
    if (r < 0)
        return;
    int st = send_or_keep(c, buf, (size_t)r);
    if (st < 0)
        drop(c);
    else if (st > 0)
        watch(c, EPOLL_CTL_MOD, EPOLLOUT);
}

static void on_writable(struct conn *c)
{
    unsigned char *old = c->pending;
    size_t off = c->off, len = c->len;
    c->pending = NULL;
    int st = send_or_keep(c, old + off, len - off);
    free(old);
    if (st < 0)
        drop(c);
    else if (st == 0)
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
}

static void on_accept(int lfd)
{
    int one = 1;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR
                && errno != ECONNABORTED)
                perror("accept4");   /* e.g. EMFILE: keep serving the others */
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        watch(c, EPOLL_CTL_ADD, EPOLLIN);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: c_server PORT [MAX_SECONDS]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int max_s = argc == 3 ? atoi(argv[2]) : 600;
    if (port <= 0 || port > 65535 || max_s <= 0) {
        fprintf(stderr, "c_server: bad port or lifetime\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)max_s);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        fatal("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0)
        fatal("bind");
    if (listen(lfd, 1024) < 0)
        fatal("listen");

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        fatal("epoll_create1");
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;   /* NULL marks the listening socket */
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        fatal("epoll_ctl");

    printf("READY\n");
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    for (;;) {   /* bounded by alarm() above, or SIGTERM from the harness */
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fatal("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c)
                on_accept(lfd);
            else if (c->pending)
                on_writable(c);   /* EPOLLOUT, or ERR/HUP which send reports */
            else
                on_readable(c);   /* EPOLLIN, or ERR/HUP which recv reports */
        }
    }
}
