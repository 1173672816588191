package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/net/ipv4"

	"falg/test/lab"
)

var (
	dnsSeconds = flag.Int("dns-t", 5, "seconds per DNS rate run")
	dnsSockets = flag.Int("dns-c", 4, "DNS client sockets (each its own source port)")
	dnsWindow  = flag.Int("dns-w", 32, "DNS queries in flight per socket")
)

// dnsResponder answers every DNS query on ns:53 (UDP) with an empty
// NOERROR response echoing the question: the least a server can do, with
// batched system calls (recvmmsg/sendmmsg), so that the runs compare the
// paths, not a server implementation. It runs until ctx ends.
func dnsResponder(ctx context.Context, ns *lab.NS) error {
	pc, err := ns.ListenPacket("udp4", "0.0.0.0:53")
	if err != nil {
		return err
	}
	uc := pc.(*net.UDPConn)
	uc.SetReadBuffer(4 << 20)
	uc.SetWriteBuffer(4 << 20)
	go func() {
		<-ctx.Done()
		uc.Close()
	}()
	bc := ipv4.NewPacketConn(uc)
	for range 2 {
		go func() {
			msgs := newBatch(64)
			for {
				n, err := bc.ReadBatch(msgs, 0)
				if err != nil {
					return
				}
				out := msgs[:0]
				for _, m := range msgs[:n] {
					b := m.Buffers[0][:m.N]
					if len(b) < 12 || b[2]&0x80 != 0 {
						continue
					}
					b[2] |= 0x80 // QR
					b[3] = 0x80  // RA, NOERROR
					m.Buffers = [][]byte{b}
					out = append(out, m)
				}
				for len(out) > 0 {
					k, err := bc.WriteBatch(out, 0)
					if err != nil {
						return
					}
					out = out[k:]
				}
				for i := range msgs {
					msgs[i].Buffers[0] = msgs[i].Buffers[0][:cap(msgs[i].Buffers[0])]
				}
			}
		}()
	}
	return nil
}

// newBatch makes n messages with a 1500-byte buffer each.
func newBatch(n int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	return ms
}

// dnsQuery is a query for name with ID 0, in wire form.
func dnsQuery(name string) []byte {
	b := []byte{0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for len(name) > 0 {
		i := 0
		for i < len(name) && name[i] != '.' {
			i++
		}
		b = append(b, byte(i))
		b = append(b, name[:i]...)
		if i < len(name) {
			i++
		}
		name = name[i:]
	}
	return append(b, 0, 0, 1, 0, 1) // root, type A, class IN
}

// dnsRate sends queries alternating between zone a (to dst[0]) and zone b
// (to dst[1]) from *dnsSockets sockets in client, each keeping *dnsWindow
// in flight with batched system calls, for *dnsSeconds, and returns
// answers per second and the queries lost (not answered within 200 ms).
func dnsRate(client *lab.NS, dst [2]netip.AddrPort) (qps float64, lost int64, err error) {
	tmpl := [2][]byte{dnsQuery("www.a.example"), dnsQuery("www.b.example")}
	addrs := [2]net.Addr{net.UDPAddrFromAddrPort(dst[0]), net.UDPAddrFromAddrPort(dst[1])}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var answers int64
	var errs []error
	start := time.Now()
	end := start.Add(time.Duration(*dnsSeconds) * time.Second)
	for range *dnsSockets {
		pc, err := client.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			return 0, 0, err
		}
		uc := pc.(*net.UDPConn)
		uc.SetReadBuffer(4 << 20)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer uc.Close()
			bc := ipv4.NewPacketConn(uc)
			w := *dnsWindow
			// Queries to send: one buffer per slot, rewritten with a new ID.
			out := make([]ipv4.Message, w)
			bufs := make([][]byte, w)
			for i := range bufs {
				bufs[i] = make([]byte, 0, 64)
			}
			var id uint16
			send := func(k int) error {
				for i := range k {
					id++
					b := append(bufs[i][:0], tmpl[id%2]...)
					b[0], b[1] = byte(id>>8), byte(id)
					out[i] = ipv4.Message{Buffers: [][]byte{b}, Addr: addrs[id%2]}
				}
				for sent := 0; sent < k; {
					n, err := bc.WriteBatch(out[sent:k], 0)
					if err != nil {
						return err
					}
					sent += n
				}
				return nil
			}
			in := newBatch(w)
			var n, miss int64
			ferr := send(w)
			for ferr == nil && time.Now().Before(end) {
				uc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				k, err := bc.ReadBatch(in, 0)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					// The window was lost: prime it again.
					miss += int64(w)
					ferr = send(w)
					continue
				}
				if err != nil {
					ferr = err
					break
				}
				for _, m := range in[:k] {
					b := m.Buffers[0][:m.N]
					if len(b) < 12 || b[2]&0x80 == 0 || b[3]&0x0f != 0 {
						ferr = fmt.Errorf("bad answer %x", b[:min(len(b), 12)])
						break
					}
				}
				n += int64(k)
				if ferr == nil {
					ferr = send(k)
				}
			}
			mu.Lock()
			answers += n
			lost += miss
			if ferr != nil {
				errs = append(errs, ferr)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, 0, fmt.Errorf("dns rate: %w", err)
	}
	return float64(answers) / time.Since(start).Seconds(), lost, nil
}

// dnsBench measures UDP DNS queries per second straight to the two
// servers, through a static DNAT (one port per server) and through falg,
// which routes each query by its zone, in rounds interleaved, and falg's
// CPU per query.
func dnsBench(ctx context.Context, l *lab.Lab, falgPid int, admin string) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, b := range l.Backends[:2] {
		if err := dnsResponder(rctx, b); err != nil {
			return err
		}
	}
	client := l.Clients[0]
	direct := [2]netip.AddrPort{netip.MustParseAddrPort("10.0.1.2:53"), netip.MustParseAddrPort("10.0.1.3:53")}
	dnat := [2]netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:5353"), netip.MustParseAddrPort("10.0.0.1:5354")}
	via := [2]netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:53"), netip.MustParseAddrPort("10.0.0.1:53")}
	fmt.Printf("DNS over UDP, %d sockets x %d in flight, zones alternating, %d s per run, %d rounds\n",
		*dnsSockets, *dnsWindow, *dnsSeconds, *rounds)
	var dRate, nRate, fRate, dCPU, nCPU, fCPU, fProc []float64
	var dLost, nLost, fLost int64
	st0, _ := stats(admin)
	for r := range *rounds {
		sys0 := systemCPU()
		v, lost, err := dnsRate(client, direct)
		if err != nil {
			return fmt.Errorf("direct: %w", err)
		}
		dRate, dLost = append(dRate, v), dLost+lost
		dCPU = append(dCPU, float64((systemCPU()-sys0).Microseconds())/(v*float64(*dnsSeconds)))

		sys0 = systemCPU()
		v, lost, err = dnsRate(client, dnat)
		if err != nil {
			return fmt.Errorf("static DNAT: %w", err)
		}
		nRate, nLost = append(nRate, v), nLost+lost
		nCPU = append(nCPU, float64((systemCPU()-sys0).Microseconds())/(v*float64(*dnsSeconds)))

		if *profile != "" && r == *rounds-1 && *only == "dns" {
			go saveProfile(admin)
		}
		sys0, p0 := systemCPU(), cpuTime(falgPid)
		v, lost, err = dnsRate(client, via)
		if err != nil {
			return fmt.Errorf("through falg: %w", err)
		}
		fRate, fLost = append(fRate, v), fLost+lost
		n := v * float64(*dnsSeconds)
		fCPU = append(fCPU, float64((systemCPU()-sys0).Microseconds())/n)
		fProc = append(fProc, float64((cpuTime(falgPid)-p0).Microseconds())/n)
	}
	fmt.Printf("  direct to servers  %7.0f q/s   %5.1f us machine CPU per query   (rounds: %s; lost %d)\n",
		median(dRate), median(dCPU), fmtList(dRate), dLost)
	fmt.Printf("  static nft DNAT    %7.0f q/s   %5.1f us machine CPU per query   (rounds: %s; lost %d)\n",
		median(nRate), median(nCPU), fmtList(nRate), nLost)
	fmt.Printf("  through falg       %7.0f q/s   %5.1f us machine CPU per query   (rounds: %s; lost %d)\n",
		median(fRate), median(fCPU), fmtList(fRate), fLost)
	fmt.Printf("  ratio falg/direct %.2f, falg/DNAT %.2f; falg process CPU per query %.1f us\n",
		median(fRate)/median(dRate), median(fRate)/median(nRate), median(fProc))
	if st, err := stats(admin); err == nil && st0 != nil {
		q := float64(st["dns_queries"] - st0["dns_queries"])
		if q > 0 {
			fmt.Printf("  per query: %.2f packets queued; %d overruns, %d refused\n",
				float64(st["queued"]-st0["queued"])/q, st["overruns"]-st0["overruns"], st["dns_refused"]-st0["dns_refused"])
		}
	}
	return nil
}
