package seqnat

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// udpLab is three namespaces: client -- router -- server, joined by veth.
// The client's default route points at the router; the server's too.
type udpLab struct {
	client, router, server string
}

func newUDPLab(t *testing.T) udpLab {
	t.Helper()
	l := udpLab{client: newNS(t, "c"), router: newNS(t, "r"), server: newNS(t, "s")}
	for _, ns := range []string{l.client, l.router, l.server} {
		// No duplicate address detection, also for link-local addresses:
		// neighbour discovery would wait for it.
		sysctl(t, ns, "net.ipv6.conf.default.accept_dad", "0")
		sysctl(t, ns, "net.ipv6.conf.all.accept_dad", "0")
	}
	run(t, "ip", "-n", l.client, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", l.router)
	run(t, "ip", "-n", l.server, "link", "add", "s0", "type", "veth", "peer", "name", "r1", "netns", l.router)
	for _, c := range [][]string{
		{l.client, "addr", "add", "10.77.1.2/24", "dev", "c0"},
		{l.client, "-6", "addr", "add", "fd00:77:1::2/64", "dev", "c0", "nodad"},
		{l.client, "link", "set", "c0", "up"},
		{l.client, "route", "add", "default", "via", "10.77.1.1"},
		{l.client, "-6", "route", "add", "default", "via", "fd00:77:1::1"},
		{l.router, "addr", "add", "10.77.1.1/24", "dev", "r0"},
		{l.router, "-6", "addr", "add", "fd00:77:1::1/64", "dev", "r0", "nodad"},
		{l.router, "addr", "add", "10.77.2.1/24", "dev", "r1"},
		{l.router, "-6", "addr", "add", "fd00:77:2::1/64", "dev", "r1", "nodad"},
		{l.router, "link", "set", "r0", "up"},
		{l.router, "link", "set", "r1", "up"},
		{l.server, "addr", "add", "10.77.2.2/24", "dev", "s0"},
		{l.server, "-6", "addr", "add", "fd00:77:2::2/64", "dev", "s0", "nodad"},
		{l.server, "link", "set", "s0", "up"},
		{l.server, "route", "add", "default", "via", "10.77.2.1"},
		{l.server, "-6", "route", "add", "default", "via", "fd00:77:2::1"},
	} {
		args := append([]string{"-n"}, c...)
		run(t, "ip", args...)
	}
	sysctl(t, l.router, "net.ipv4.ip_forward", "1")
	sysctl(t, l.router, "net.ipv6.conf.all.forwarding", "1")
	sysctl(t, l.router, "net.netfilter.nf_conntrack_acct", "1")
	loadRuleset(t, l.router, natRuleset)
	return l
}

// TestKernelUDPSplice creates a UDP entry on the router before the first
// packet and checks that real datagrams follow it both ways, byte-exact:
// the server sees the client (or the router's SNAT address), the client
// sees answers from the address it asked.
func TestKernelUDPSplice(t *testing.T) {
	requireLab(t)
	l := newUDPLab(t)
	ap := netip.MustParseAddrPort
	tests := []struct {
		name                   string
		client, virtual, serve netip.AddrPort
		snat                   netip.AddrPort // zero = none
	}{
		{"v4", ap("10.77.1.2:40001"), ap("10.77.9.9:53"), ap("10.77.2.2:5353"), netip.AddrPort{}},
		{"v4 snat", ap("10.77.1.2:40002"), ap("10.77.9.9:53"), ap("10.77.2.2:5353"), ap("10.77.2.1:41002")},
		{"v6", ap("[fd00:77:1::2]:40003"), ap("[fd00:77:9::9]:53"), ap("[fd00:77:2::2]:5353"), netip.AddrPort{}},
		{"v6 snat", ap("[fd00:77:1::2]:40004"), ap("[fd00:77:9::9]:53"), ap("[fd00:77:2::2]:5353"), ap("[fd00:77:2::1]:41004")},
	}
	var rc *Conn
	mustInNS(t, l.router, func() (err error) { rc, err = Dial(); return err })
	defer rc.Close()

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cli, srv *net.UDPConn
			mustInNS(t, l.client, func() (err error) {
				cli, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(tt.client))
				return err
			})
			defer cli.Close()
			mustInNS(t, l.server, func() (err error) {
				srv, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(tt.serve))
				return err
			})
			defer srv.Close()

			f := Flow{
				Proto:   unix.IPPROTO_UDP,
				Orig:    Tuple{Src: tt.client, Dst: tt.virtual},
				NATDst:  tt.serve,
				NATSrc:  tt.snat,
				Mark:    testMarkBits | 7,
				Timeout: 30,
			}
			if err := rc.Create(f); err != nil {
				t.Fatalf("Create: %v", err)
			}
			defer rc.Delete(f.Proto, f.Orig)

			query := make([]byte, 1200)
			if _, err := rand.Read(query); err != nil {
				t.Fatal(err)
			}
			answer := append([]byte("answer:"), query[:500]...)

			if _, err := cli.WriteToUDPAddrPort(query, tt.virtual); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			srv.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("server got nothing: %v\n%s", err, conntrackDump(l.router))
			}
			wantFrom := tt.client
			if tt.snat.IsValid() {
				wantFrom = tt.snat
			}
			if from.Addr().Unmap() != wantFrom.Addr() || from.Port() != wantFrom.Port() {
				t.Errorf("server saw the query from %s, want %s", from, wantFrom)
			}
			if !bytes.Equal(buf[:n], query) {
				t.Errorf("server got %d bytes that differ from the %d sent", n, len(query))
			}

			if _, err := srv.WriteToUDPAddrPort(answer, from); err != nil {
				t.Fatal(err)
			}
			cli.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, from, err = cli.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("client got no answer: %v\n%s", err, conntrackDump(l.router))
			}
			if from.Addr().Unmap() != tt.virtual.Addr() || from.Port() != tt.virtual.Port() {
				t.Errorf("client saw the answer from %s, want %s", from, tt.virtual)
			}
			if !bytes.Equal(buf[:n], answer) {
				t.Errorf("client got %q..., want %q...", trim(buf[:n]), trim(answer))
			}

			e, err := rc.Get(f.Proto, f.Orig)
			if err != nil {
				t.Fatal(err)
			}
			if e.Status&StatusSeenReply == 0 || e.Mark != f.Mark {
				t.Errorf("entry status %#x mark %#x after the exchange", e.Status, e.Mark)
			}
			// One datagram each way went through this very entry.
			if e.CountersOrig.Packets != 1 || e.CountersReply.Packets != 1 {
				t.Errorf("counters orig %+v reply %+v, want one packet each way", e.CountersOrig, e.CountersReply)
			}
			hdr := uint64(28) // IPv4 + UDP
			if tt.client.Addr().Is6() {
				hdr = 48
			}
			if e.CountersOrig.Bytes != hdr+uint64(len(query)) || e.CountersReply.Bytes != hdr+uint64(len(answer)) {
				t.Errorf("counters orig %d bytes reply %d bytes, want %d and %d",
					e.CountersOrig.Bytes, e.CountersReply.Bytes, hdr+uint64(len(query)), hdr+uint64(len(answer)))
			}
		})
	}
}

func trim(b []byte) string {
	if len(b) > 16 {
		b = b[:16]
	}
	return fmt.Sprintf("%x", b)
}
