package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"falg/test/lab"
)

// The backends and clients of these tests speak a small protocol over
// HTTP/1.1 framing, with or without TLS. The client sends a request whose
// X-Bytes header says how many bytes follow it; the backend answers with a
// header naming itself and the peer address it sees, then both sides stream
// that many pseudo-random bytes at once, the backend appends the SHA-256 of
// what it received, and both close their sending side. A request without
// X-Bytes (curl) gets a one-line body instead.

var serverCert = sync.OnceValue(func() tls.Certificate {
	c, err := lab.Certificate("*.example", "*.a.example", "*.b.example", "a.example")
	if err != nil {
		panic(err)
	}
	return c
})

// serve runs the test backend on ns at port (all addresses, v4 and v6)
// until the test ends. tlsOn wraps each connection in TLS.
func serve(t testing.TB, ns *lab.NS, port int, tlsOn bool) {
	t.Helper()
	ln, err := ns.Listen("tcp", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Serve(ln, func(c net.Conn) {
		conn := c
		if tlsOn {
			conn = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{serverCert()}})
		}
		backendConn(ns.Name, conn, c.RemoteAddr().String(), timestamps(c))
	}))
}

func backendConn(name string, c net.Conn, peer string, ts bool) {
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	br := bufio.NewReader(c)
	tp := textproto.NewReader(br)
	if _, err := tp.ReadLine(); err != nil {
		return
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return
	}
	sni := ""
	if tc, ok := c.(*tls.Conn); ok {
		sni = tc.ConnectionState().ServerName
	}
	head := fmt.Sprintf("X-Backend: %s\r\nX-Peer: %s\r\nX-SNI: %s\r\nX-Host: %s\r\nX-Timestamps: %t\r\n",
		name, peer, sni, h.Get("Host"), ts)
	nstr := h.Get("X-Bytes")
	if nstr == "" {
		body := fmt.Sprintf("backend=%s peer=%s\n", name, peer)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s", head, len(body), body)
		return
	}
	n, _ := strconv.ParseInt(nstr, 10, 64)
	seed, _ := strconv.ParseUint(h.Get("X-Seed"), 10, 64)
	if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n%s\r\n", head); err != nil {
		return
	}
	got := make(chan []byte, 1)
	go func() {
		hs := sha256.New()
		if _, err := io.CopyN(hs, br, n); err != nil {
			got <- nil
			return
		}
		got <- hs.Sum(nil)
	}()
	if _, err := io.CopyN(c, stream(seed+1), n); err != nil {
		return
	}
	sum := <-got
	if sum == nil {
		return
	}
	c.Write(sum)
	closeWrite(c)
	io.Copy(io.Discard, br) // until the client's FIN
}

func closeWrite(c net.Conn) {
	switch c := c.(type) {
	case *tls.Conn:
		c.CloseWrite()
	case *net.TCPConn:
		c.CloseWrite()
	}
}

// stream is a deterministic byte stream for a seed.
func stream(seed uint64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return mrand.NewChaCha8(key)
}

// result is what a client learned from one exchange.
type result struct {
	Backend, Peer, SNI, Host string
	// ClientTS and BackendTS: the connection uses TCP timestamps, as the
	// client's and the backend's kernels see it.
	ClientTS, BackendTS bool
}

// tcpiOptTimestamps is TCPI_OPT_TIMESTAMPS of linux/tcp.h.
const tcpiOptTimestamps = 1

// timestamps reports whether c's kernel negotiated TCP timestamps.
func timestamps(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	var info *unix.TCPInfo
	rc.Control(func(fd uintptr) { info, _ = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	return info != nil && info.Options&tcpiOptTimestamps != 0
}

// exchange connects from ns to addr (as host/SNI name), moves n bytes each
// way and checks both directions byte for byte and a clean close.
func exchange(ctx context.Context, ns *lab.NS, addr, name string, tlsOn bool, n int64) (result, error) {
	return exchangeWith(ctx, ns, addr, name, xopts{tls: tlsOn, n: n})
}

// xopts tune an exchange.
type xopts struct {
	tls bool
	n   int64
	// pace, if set, paces the client's sending: 64 KiB per pace.
	pace time.Duration
	// midway, if set, is called once half of the backend's bytes arrived.
	midway func()
	// prelude is written before the request, in the same write; the
	// client then expects preludeReply before the backend's answer.
	prelude, preludeReply []byte
}

// pacedReader reads at most 64 KiB per call and sleeps pace before each.
type pacedReader struct {
	r    io.Reader
	pace time.Duration
}

func (p pacedReader) Read(b []byte) (int, error) {
	time.Sleep(p.pace)
	return p.r.Read(b[:min(len(b), 64<<10)])
}

// exchangeWith is exchange with options.
func exchangeWith(ctx context.Context, ns *lab.NS, addr, name string, o xopts) (result, error) {
	tlsOn, n, pace := o.tls, o.n, o.pace
	var r result
	c, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		return r, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	conn := c
	if tlsOn {
		tc := tls.Client(c, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err := tc.HandshakeContext(ctx); err != nil {
			return r, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
	}
	seed := mrand.Uint64() >> 1
	req := fmt.Appendf(o.prelude[:len(o.prelude):len(o.prelude)], "GET / HTTP/1.1\r\nHost: %s\r\nX-Bytes: %d\r\nX-Seed: %d\r\n\r\n", name, n, seed)
	if _, err := conn.Write(req); err != nil {
		return r, err
	}
	sent := make(chan error, 1)
	var sentSum []byte
	go func() {
		hs := sha256.New()
		var src io.Reader = stream(seed)
		if pace > 0 {
			src = pacedReader{src, pace}
		}
		_, err := io.CopyN(io.MultiWriter(conn, hs), src, n)
		sentSum = hs.Sum(nil)
		sent <- err
	}()
	br := bufio.NewReader(conn)
	if len(o.preludeReply) > 0 {
		got := make([]byte, len(o.preludeReply))
		if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, o.preludeReply) {
			return r, fmt.Errorf("prelude reply %q, %v; want %q", got, err, o.preludeReply)
		}
	}
	tp := textproto.NewReader(br)
	status, err := tp.ReadLine()
	if err != nil {
		// A reset is reported to the first call that looks: the writer may
		// have taken it and left the reader an EOF.
		select {
		case serr := <-sent:
			if isReset(serr) {
				return r, fmt.Errorf("send: %w", serr)
			}
		case <-time.After(time.Second):
		}
		return r, fmt.Errorf("read status: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		return r, fmt.Errorf("status %q", status)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return r, err
	}
	r = result{Backend: h.Get("X-Backend"), Peer: h.Get("X-Peer"), SNI: h.Get("X-SNI"), Host: h.Get("X-Host"),
		ClientTS: timestamps(c), BackendTS: h.Get("X-Timestamps") == "true"}
	want := sha256.New()
	io.CopyN(want, stream(seed+1), n)
	got := sha256.New()
	half := n / 2
	if o.midway == nil {
		half = 0
	}
	if m, err := io.CopyN(got, br, half); err != nil {
		return r, fmt.Errorf("received %d of %d bytes: %w", m, n, err)
	}
	if o.midway != nil {
		o.midway()
	}
	if m, err := io.CopyN(got, br, n-half); err != nil {
		return r, fmt.Errorf("received %d of %d bytes: %w", half+m, n, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		return r, errors.New("bytes from the backend differ")
	}
	if err := <-sent; err != nil {
		return r, fmt.Errorf("send: %w", err)
	}
	closeWrite(conn)
	theirs := make([]byte, sha256.Size)
	if _, err := io.ReadFull(br, theirs); err != nil {
		return r, fmt.Errorf("read backend's hash: %w", err)
	}
	if !bytes.Equal(theirs, sentSum) {
		return r, errors.New("bytes the backend received differ from those sent")
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		return r, fmt.Errorf("after the hash: %d bytes, %v (want a clean FIN)", len(rest), err)
	}
	return r, nil
}

// isReset reports whether err says the peer reset the connection.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func tlsClient(c net.Conn, name string) *tls.Conn {
	return tls.Client(c, &tls.Config{ServerName: name, InsecureSkipVerify: true})
}
