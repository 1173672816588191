package seqnat

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const testMarkBits = 0x00f00000

// TestKernelEntryLifecycle creates, reads back, lists, re-creates and
// deletes entries in a fresh namespace and checks what the kernel made of
// them, including the destroy event.
func TestKernelEntryLifecycle(t *testing.T) {
	requireLab(t)
	ap := netip.MustParseAddrPort
	tests := []struct {
		name string
		flow Flow
	}{
		{
			name: "tcp4 dnat snat seqadj",
			flow: Flow{
				Proto:  unix.IPPROTO_TCP,
				Orig:   Tuple{Src: ap("10.1.0.2:40000"), Dst: ap("10.9.9.9:443")},
				NATDst: ap("10.2.0.2:8443"),
				NATSrc: ap("10.2.0.1:50000"),
				TCP:    &TCPInfo{WScaleOrig: 7, WScaleReply: 9},
				// Offsets across the 2^32 wrap.
				SeqAdjOrig:  &SeqAdj{CorrectionPos: 0xfffffff0, OffsetBefore: 0x20, OffsetAfter: 0x20},
				SeqAdjReply: &SeqAdj{CorrectionPos: 0x10, OffsetBefore: 0xffffff00, OffsetAfter: 0xffffff00},
			},
		},
		{
			name: "tcp6 dnat snat seqadj",
			flow: Flow{
				Proto:       unix.IPPROTO_TCP,
				Orig:        Tuple{Src: ap("[fd00:1::2]:40000"), Dst: ap("[fd00:9::9]:443")},
				NATDst:      ap("[fd00:2::2]:8443"),
				NATSrc:      ap("[fd00:2::1]:50000"),
				TCP:         &TCPInfo{WScaleOrig: 7, WScaleReply: 7},
				SeqAdjOrig:  &SeqAdj{CorrectionPos: 1, OffsetBefore: 2, OffsetAfter: 2},
				SeqAdjReply: &SeqAdj{CorrectionPos: 3, OffsetBefore: 4, OffsetAfter: 4},
			},
		},
		{
			name: "tcp6 dnat only",
			flow: Flow{
				Proto:       unix.IPPROTO_TCP,
				Orig:        Tuple{Src: ap("[fd00:1::2]:40001"), Dst: ap("[fd00:9::9]:443")},
				NATDst:      ap("[fd00:2::2]:443"),
				SeqAdjReply: &SeqAdj{CorrectionPos: 3, OffsetBefore: 4, OffsetAfter: 4},
			},
		},
		{
			name: "udp4 dnat snat",
			flow: Flow{
				Proto:  unix.IPPROTO_UDP,
				Orig:   Tuple{Src: ap("10.1.0.2:5353"), Dst: ap("10.9.9.9:53")},
				NATDst: ap("10.2.0.2:53"),
				NATSrc: ap("10.2.0.1:41000"),
			},
		},
		{
			name: "udp6 dnat only",
			flow: Flow{
				Proto:  unix.IPPROTO_UDP,
				Orig:   Tuple{Src: ap("[fd00:1::2]:5353"), Dst: ap("[fd00:9::9]:53")},
				NATDst: ap("[fd00:2::2]:5353"),
			},
		},
		{
			name: "tcp4 zone",
			flow: Flow{
				Proto:  unix.IPPROTO_TCP,
				Orig:   Tuple{Src: ap("10.1.0.2:40002"), Dst: ap("10.9.9.9:443")},
				NATDst: ap("10.2.0.2:443"),
				Zone:   7,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newNS(t, "ct")
			loadRuleset(t, ns, natRuleset)
			f := tt.flow
			f.Mark = testMarkBits | 0x42
			f.Timeout = 90
			var c *Conn
			var ev *Events
			mustInNS(t, ns, func() (err error) {
				if c, err = Dial(); err != nil {
					return err
				}
				ev, err = ListenDestroy()
				return err
			})
			t.Cleanup(func() { c.Close(); ev.Close() })

			if err := c.Create(f); err != nil {
				t.Fatalf("Create: %v", err)
			}
			// An unmarked neighbour that List must leave out.
			other := f
			other.Mark = 0x42
			other.Orig.Src = netip.AddrPortFrom(f.Orig.Src.Addr(), f.Orig.Src.Port()+1000)
			if f.NATSrc.IsValid() {
				// Same backend and router port: the NATed reply tuple
				// clashes with f's, which the kernel refuses.
				if err := c.Create(other); !errors.Is(err, unix.EEXIST) {
					t.Errorf("Create with a clashing reply tuple: %v, want EEXIST", err)
				}
				other.NATSrc = netip.AddrPortFrom(f.NATSrc.Addr(), f.NATSrc.Port()+1)
			}
			if err := c.Create(other); err != nil {
				t.Fatalf("Create unmarked: %v", err)
			}

			e, err := c.GetZone(f.Zone, f.Proto, f.Orig)
			if err != nil {
				t.Fatalf("Get: %v\n%s", err, conntrackDump(ns))
			}
			checkEntry(t, e, f)

			list, err := c.List(testMarkBits, testMarkBits)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if n := countOrig(list, f.Orig); n != 1 {
				t.Errorf("List(mark) has the marked flow %d times, want 1: %+v", n, list)
			}
			if n := countOrig(list, other.Orig); n != 0 {
				t.Errorf("List(mark) has the unmarked flow: %+v", list)
			}
			all, err := c.List(0, 0)
			if err != nil {
				t.Fatalf("List(0, 0): %v", err)
			}
			if countOrig(all, f.Orig) != 1 || countOrig(all, other.Orig) != 1 {
				t.Errorf("List(0, 0) = %+v, want both flows", all)
			}

			if err := c.Create(f); !errors.Is(err, unix.EEXIST) {
				t.Errorf("second Create: %v, want EEXIST", err)
			}

			if err := c.DeleteZone(f.Zone, f.Proto, f.Orig); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			got := waitDestroy(t, ev, f.Orig)
			if got.Mark != f.Mark || got.Proto != f.Proto || got.Zone != f.Zone {
				t.Errorf("destroy event %+v: want mark %#x proto %d zone %d", got.Entry, f.Mark, f.Proto, f.Zone)
			}
			if got.ID != e.ID {
				t.Errorf("destroy event ID %#x, want %#x", got.ID, e.ID)
			}
			if _, err := c.GetZone(f.Zone, f.Proto, f.Orig); !errors.Is(err, unix.ENOENT) {
				t.Errorf("Get after Delete: %v, want ENOENT", err)
			}
			if err := c.DeleteZone(f.Zone, f.Proto, f.Orig); !errors.Is(err, unix.ENOENT) {
				t.Errorf("second Delete: %v, want ENOENT", err)
			}
		})
	}
}

// checkEntry compares what the kernel reports with the flow created.
func checkEntry(t *testing.T, e Entry, f Flow) {
	t.Helper()
	if e.Proto != f.Proto || e.Orig != f.Orig || e.Zone != f.Zone {
		t.Errorf("entry %d %s zone %d, want %d %s zone %d", e.Proto, e.Orig, e.Zone, f.Proto, f.Orig, f.Zone)
	}
	// The reply tuple is the NATed one: backend -> router (SNAT) or client.
	want := Tuple{Src: f.NATDst, Dst: f.Orig.Src}
	wantStatus := uint32(createStatus | StatusDstNAT)
	if f.NATSrc.IsValid() {
		want.Dst = f.NATSrc
		wantStatus |= StatusSrcNAT
	}
	if e.Reply != want {
		t.Errorf("reply tuple %s, want %s", e.Reply, want)
	}
	if f.SeqAdjOrig != nil || f.SeqAdjReply != nil {
		wantStatus |= StatusSeqAdjust
	}
	if e.Status&wantStatus != wantStatus {
		t.Errorf("status %#x lacks bits %#x", e.Status, wantStatus&^e.Status)
	}
	if e.Mark != f.Mark {
		t.Errorf("mark %#x, want %#x", e.Mark, f.Mark)
	}
	if e.Timeout == 0 || e.Timeout > f.Timeout {
		t.Errorf("timeout %d, want 1..%d", e.Timeout, f.Timeout)
	}
	if f.Proto == unix.IPPROTO_TCP {
		if e.TCP == nil {
			t.Fatal("no TCP protoinfo")
		}
		if e.TCP.State != TCPStateEstablished {
			t.Errorf("TCP state %d, want ESTABLISHED", e.TCP.State)
		}
		if f.TCP != nil && (e.TCP.WScaleOrig != f.TCP.WScaleOrig || e.TCP.WScaleReply != f.TCP.WScaleReply) {
			t.Errorf("wscale %d/%d, want %d/%d", e.TCP.WScaleOrig, e.TCP.WScaleReply, f.TCP.WScaleOrig, f.TCP.WScaleReply)
		}
		if e.TCP.FlagsOrig&TCPFlagsDefault != TCPFlagsDefault || e.TCP.FlagsReply&TCPFlagsDefault != TCPFlagsDefault {
			t.Errorf("TCP flags %#x/%#x, want %#x set", e.TCP.FlagsOrig, e.TCP.FlagsReply, TCPFlagsDefault)
		}
	}
	checkSeqAdj(t, "orig", e.SeqAdjOrig, f.SeqAdjOrig)
	checkSeqAdj(t, "reply", e.SeqAdjReply, f.SeqAdjReply)
}

func checkSeqAdj(t *testing.T, dir string, got, want *SeqAdj) {
	t.Helper()
	switch {
	case want == nil && got != nil && *got != (SeqAdj{}):
		t.Errorf("seqadj %s = %+v, want none", dir, *got)
	case want != nil && got == nil:
		t.Errorf("seqadj %s missing, want %+v", dir, *want)
	case want != nil && *got != *want:
		t.Errorf("seqadj %s = %+v, want %+v", dir, *got, *want)
	}
}

func countOrig(es []Entry, orig Tuple) int {
	n := 0
	for _, e := range es {
		if e.Orig == orig {
			n++
		}
	}
	return n
}

// waitDestroy returns the destroy event for orig, or fails after 3 s.
func waitDestroy(t *testing.T, ev *Events, orig Tuple) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for {
		evs, err := ev.Receive(ctx)
		if err != nil {
			t.Fatalf("no destroy event for %s: %v", orig, err)
		}
		for _, e := range evs {
			if e.Type == EventDestroy && e.Orig == orig {
				return e
			}
		}
	}
}

// TestKernelEventsCancel checks that Receive returns when its context ends.
func TestKernelEventsCancel(t *testing.T) {
	requireLab(t)
	ns := newNS(t, "ev")
	var ev *Events
	mustInNS(t, ns, func() (err error) {
		ev, err = Listen(GroupNew, GroupDestroy)
		return err
	})
	defer ev.Close()

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, err := ev.Receive(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Receive = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Receive returned after %v", d)
	}

	// The subscription still works after a cancelled Receive.
	var c *Conn
	mustInNS(t, ns, func() (err error) { c, err = Dial(); return err })
	defer c.Close()
	f := Flow{
		Proto: unix.IPPROTO_UDP,
		Orig:  Tuple{Src: netip.MustParseAddrPort("10.1.0.2:1000"), Dst: netip.MustParseAddrPort("10.9.9.9:53")},
	}
	if err := c.Create(f); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	evs, err := ev.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive after cancel: %v", err)
	}
	if len(evs) == 0 || evs[0].Type != EventNew || evs[0].Orig != f.Orig {
		t.Errorf("events %+v, want new %s", evs, f.Orig)
	}
}

// TestKernelEventsFilterMark checks that a filtered subscription gets the
// destroy events of marked entries only, while an unfiltered one gets all.
func TestKernelEventsFilterMark(t *testing.T) {
	requireLab(t)
	ns := newNS(t, "evf")
	loadRuleset(t, ns, natRuleset)
	var c *Conn
	var filtered, all *Events
	mustInNS(t, ns, func() (err error) {
		if c, err = Dial(); err != nil {
			return err
		}
		if all, err = ListenDestroy(); err != nil {
			return err
		}
		if filtered, err = ListenDestroy(); err != nil {
			return err
		}
		return filtered.FilterMark(testMarkBits, testMarkBits)
	})
	t.Cleanup(func() { c.Close(); all.Close(); filtered.Close() })

	ap := netip.MustParseAddrPort
	var flows []Flow
	for i, orig := range []Tuple{
		{Src: ap("10.1.0.2:40000"), Dst: ap("10.9.9.9:443")},
		{Src: ap("[fd00:1::2]:40000"), Dst: ap("[fd00:9::9]:443")},
	} {
		// Others' first, ours last: events come in order, so a filter
		// that let others' through would show them first.
		for j, mark := range []uint32{0, 0x42, 0x00100042, testMarkBits | 0x42} {
			f := Flow{
				Proto:       unix.IPPROTO_TCP,
				Orig:        Tuple{Src: netip.AddrPortFrom(orig.Src.Addr(), orig.Src.Port()+uint16(j)), Dst: orig.Dst},
				NATDst:      netip.AddrPortFrom(orig.Dst.Addr(), 8443),
				Mark:        mark,
				TCP:         &TCPInfo{WScaleOrig: 7, WScaleReply: 7},
				SeqAdjReply: &SeqAdj{CorrectionPos: 1, OffsetBefore: uint32(i), OffsetAfter: uint32(i)},
			}
			if err := c.Create(f); err != nil {
				t.Fatalf("Create %s mark %#x: %v", f.Orig, mark, err)
			}
			flows = append(flows, f)
		}
	}
	for _, f := range flows {
		if err := c.Delete(f.Proto, f.Orig); err != nil {
			t.Fatalf("Delete %s: %v", f.Orig, err)
		}
	}
	for _, f := range flows {
		waitDestroy(t, all, f.Orig)
	}
	for _, f := range flows {
		if f.Mark&testMarkBits != testMarkBits {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		evs, err := filtered.Receive(ctx)
		cancel()
		if err != nil {
			t.Fatalf("filtered: no event for %s: %v", f.Orig, err)
		}
		if len(evs) != 1 || evs[0].Orig != f.Orig || evs[0].Mark != f.Mark {
			t.Fatalf("filtered: events %+v, want the destroy of %s (mark %#x) only", evs, f.Orig, f.Mark)
		}
	}
}

// TestKernelCreateWithoutNAT checks the kernel accepts a plain entry and
// fills in the identity reply tuple.
func TestKernelCreateWithoutNAT(t *testing.T) {
	requireLab(t)
	ns := newNS(t, "plain")
	var c *Conn
	mustInNS(t, ns, func() (err error) { c, err = Dial(); return err })
	defer c.Close()
	orig := Tuple{Src: netip.MustParseAddrPort("10.1.0.2:1000"), Dst: netip.MustParseAddrPort("10.9.9.9:80")}
	if err := c.Create(Flow{Proto: unix.IPPROTO_TCP, Orig: orig}); err != nil {
		t.Fatal(err)
	}
	e, err := c.Get(unix.IPPROTO_TCP, orig)
	if err != nil {
		t.Fatal(err)
	}
	if e.Reply != orig.Inverse() {
		t.Errorf("reply %s, want %s", e.Reply, orig.Inverse())
	}
	if e.Status&(StatusSrcNAT|StatusDstNAT|StatusSeqAdjust) != 0 {
		t.Errorf("status %#x has NAT/seqadj bits", e.Status)
	}
}

// BenchmarkKernelCreate measures one Create (TCP, DNAT+SNAT+seqadj); the
// Delete that makes room for the next one is not timed.
func BenchmarkKernelCreate(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("not root")
	}
	name := "falg-seqnat-bench-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add: %v: %s", err, out)
	}
	b.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	cmd := exec.Command("ip", "netns", "exec", name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(natRuleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("nft: %v: %s", err, out)
	}
	var c *Conn
	if err := inNS(name, func() (err error) { c, err = Dial(); return err }); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ap := netip.MustParseAddrPort
	orig, reply := Handshake{ClientISN: 1, RouterISN: 2, BackendSYNISN: 3, BackendISN: 4}.SeqAdj()
	f := Flow{
		Proto:  unix.IPPROTO_TCP,
		Orig:   Tuple{Src: ap("10.1.0.2:40000"), Dst: ap("10.9.9.9:443")},
		NATDst: ap("10.2.0.2:443"), NATSrc: ap("10.2.0.1:50000"),
		Mark: 1, TCP: &TCPInfo{WScaleOrig: 7, WScaleReply: 7},
		SeqAdjOrig: &orig, SeqAdjReply: &reply,
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Create(f); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.Delete(f.Proto, f.Orig); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
